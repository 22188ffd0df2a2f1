import CSystemd
import GatewayCore

#if canImport(Glibc)
    import Glibc
#endif

/// A listening socket systemd passed at start (socket activation, or the fd store giving
/// back what an earlier master stored).
struct ActivatedSocket: Sendable {
    var fd: CInt
    /// `FileDescriptorName=` or `FDNAME=`; `nil` when systemd passed none (or "unknown").
    var name: String?
    var address: ListenerAddress
}

struct SystemdActivationError: Error, CustomStringConvertible {
    var description: String
}

enum SystemdActivation {
    /// Takes the sockets systemd passed through sd_listen_fds_with_names(3), which checks
    /// LISTEN_PID. The LISTEN_* variables are unset, so workers never see them. Anything but a
    /// listening stream socket is an error: serving on it could only fail later, obscurely.
    static func takeSockets() throws(SystemdActivationError) -> [ActivatedSocket] {
        var names: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?
        let count = sd_listen_fds_with_names(1, &names)
        if count < 0 {
            throw SystemdActivationError(
                description: "sd_listen_fds_with_names: \(String(cString: strerror(-count)))")
        }
        defer {
            if let names {
                for i in 0..<Int(count) { free(names[i]) }
                free(names)
            }
        }
        var sockets: [ActivatedSocket] = []
        for i in 0..<Int(count) {
            let fd = SD_LISTEN_FDS_START + CInt(i)
            var name = names?[i].map { String(cString: $0) }
            if name == "unknown" || name?.isEmpty == true { name = nil }
            let what = "socket-activated fd \(fd)\(name.map { " (\($0))" } ?? "")"
            if sd_is_socket(fd, AF_UNSPEC, 0, -1) <= 0 {
                throw SystemdActivationError(description: "\(what) is not a socket")
            }
            if sd_is_socket(fd, AF_UNSPEC, Int32(SOCK_STREAM.rawValue), -1) <= 0 {
                throw SystemdActivationError(
                    description: "\(what) is not a stream socket (a datagram socket? use ListenStream=)")
            }
            if sd_is_socket(fd, AF_UNSPEC, Int32(SOCK_STREAM.rawValue), 1) <= 0 {
                throw SystemdActivationError(description: "\(what) is not listening")
            }
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            let address: ListenerAddress
            do {
                address = try ListeningSocket.localAddress(fd: fd)
            } catch {
                throw SystemdActivationError(description: "\(what): \(error) (only TCP over IPv4 or IPv6 is served)")
            }
            sockets.append(ActivatedSocket(fd: fd, name: name, address: address))
        }
        return sockets
    }
}
