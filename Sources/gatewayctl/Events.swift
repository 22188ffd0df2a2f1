import ArgumentParser
import Foundation
import GatewayCore

#if canImport(Glibc)
    import Glibc
#endif

struct Events: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Show what happened to the gateway: reloads with their phases and changes, upgrades, worker exits and restarts, watchdog kills, drains, stops, log-level changes.",
        discussion:
            "The master keeps the last 100 events (across upgrades). --follow prints them, then each new one as it happens, with the drains counting down, until interrupted or until gatewayd stops; it follows the new master across an upgrade."
    )
    @OptionGroup var socket: SocketOptions
    @Flag(name: .long, help: "Keep printing new events as they happen.")
    var follow = false
    @Flag(
        name: .long,
        help: "One JSON object per line: the events, then (with --follow) stream lines {\"event\"} and {\"drain\"}.")
    var json = false
    @Option(name: .long, help: ArgumentHelp("Only events with an id above this one.", valueName: "id"))
    var since: Int?

    func run() throws {
        var last = since
        let printer = EventPrinter(json: json)
        guard follow else {
            let response = try socket.send(ControlRequest(command: .events, since: since))
            guard response.ok, let events = response.events else {
                printError(
                    "events failed: \(response.error ?? "no events in the answer (is gatewayd older than events?)")")
                throw ExitCode(1)
            }
            for event in events { printer.print(event) }
            return
        }
        // Following: when the connection ends, the master stopped (the socket is gone: done) or
        // handed over in an upgrade (the new master answers: go on from the last id).
        var first = true
        while true {
            let request = ControlRequest(command: .events, follow: true, since: last)
            var answered = false
            do {
                try socket.client.exchange(request) { line in
                    switch line {
                    case .response(let response):
                        answered = true
                        for event in response.events ?? [] {
                            printer.print(event)
                            last = event.id
                        }
                        if !response.ok { printError("events failed: \(response.error ?? "unknown error")") }
                        return response.ok
                    case .stream(let streamed):
                        if let event = streamed.event {
                            printer.print(event)
                            last = event.id
                        } else if let drain = streamed.drain {
                            printer.print(drain, line: streamed)
                        }
                        return true
                    }
                }
            } catch {
                if first {
                    printError("gatewayctl: \(error)")
                    throw ExitCode(2)
                }
                return
            }
            if !answered { return }
            first = false
        }
    }
}

/// Events as a readable timeline, or as JSON lines.
struct EventPrinter {
    let json: Bool

    func print(_ event: GatewayEvent) {
        guard !json else {
            printJSONLine(event)
            return
        }
        var line = "\(Self.timestamp(event.time))  #\(event.id)  \(event.type.rawValue)"
        if let outcome = event.outcome { line += " \(outcome.rawValue)" }
        if let generation = event.generation { line += ", generation \(generation)" }
        if let worker = event.worker { line += ", worker \(worker)" }
        if let pid = event.pid { line += " (pid \(pid))" }
        if let level = event.level { line += ": \(level)\(event.target.map { " for \($0)" } ?? "")" }
        if let trigger = event.trigger { line += ", by \(trigger)" }
        if let phases = event.phases {
            let order = ["validate", "bind", "spawn", "ready", "switch", "drain"]
            let shown = order.compactMap { name in phases[name].map { "\(name) \(String(format: "%.1f", $0)) ms" } }
            line += " [" + shown.joined(separator: ", ")
            if let total = event.durationMs, event.type != .drain { line += String(format: "; total %.1f ms", total) }
            line += "]"
        } else if let duration = event.durationMs, event.type != .workerExit {
            line += String(format: " in %.1f ms", duration)
        }
        if let connections = event.connections { line += ", \(connections) connections at start" }
        Swift.print(line)
        if let reason = event.reason { Swift.print("    \(reason)") }
        for detail in event.details ?? [] { Swift.print("    \(detail)") }
        if let diff = event.diff { Swift.print("    changes: \(Self.describe(diff))") }
        fflush(nil)
    }

    func print(_ drain: ControlStreamLine.Drain, line: ControlStreamLine) {
        guard !json else {
            printJSONLine(line)
            return
        }
        Swift.print(
            "\(Self.timestamp(Date().timeIntervalSince1970))  generation \(drain.generation) draining: \(drain.connections) connections"
        )
        fflush(nil)
    }

    static func describe(_ diff: GatewayEvent.Diff) -> String {
        var parts: [String] = []
        func add(_ label: String, _ names: [String]) {
            if !names.isEmpty { parts.append("\(label) \(names.joined(separator: ", "))") }
        }
        add("listeners added:", diff.listenersAdded)
        add("listeners removed:", diff.listenersRemoved)
        add("listeners changed:", diff.listenersChanged)
        add("routes added:", diff.routesAdded)
        add("routes removed:", diff.routesRemoved)
        add("routes changed:", diff.routesChanged)
        add("upstreams changed:", diff.upstreamsChanged)
        parts += diff.settings
        return parts.isEmpty ? "none" : parts.joined(separator: "; ")
    }

    /// UTC, to the millisecond, as the logs write it.
    static func timestamp(_ time: Double) -> String {
        var seconds = time_t(time)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        let milliseconds = Int((time - Double(seconds)) * 1000)
        return String(
            format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", parts.tm_year + 1900, parts.tm_mon + 1, parts.tm_mday,
            parts.tm_hour, parts.tm_min, parts.tm_sec, milliseconds)
    }
}
