import GatewayCore
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Against this machine's real accounts database: root (uid 0, group 0) exists everywhere, and
/// uid 4000000 is far past any account Debian creates.
@Suite("Name service")
struct NameServiceTests {
    @Test("a decimal is an id, anything else a name; past UInt32 or -1 is nobody")
    func decimalIDs() {
        #expect(NameService.DecimalID("0") == .id(0))
        #expect(NameService.DecimalID("65534") == .id(65534))
        #expect(NameService.DecimalID("4294967295") == .invalid)
        #expect(NameService.DecimalID("99999999999") == .invalid)
        #expect(NameService.DecimalID("+5") == .name)
        #expect(NameService.DecimalID("www-data") == .name)
        #expect(NameService.DecimalID("") == .name)
    }

    @Test("users and groups by name and by id; unknown ones are nil, not errors")
    func lookUps() throws {
        #expect(try NameService.user("root") == NameService.User(uid: 0, gid: 0, name: "root"))
        #expect(try NameService.user("0")?.name == "root")
        #expect(try NameService.user("gatewayd-test-no-such-user") == nil)
        #expect(try NameService.user("4000000") == nil)
        #expect(try NameService.user("4294967295") == nil)
        #expect(try NameService.user("+0") == nil)
        #expect(try NameService.group("root") == 0)
        #expect(try NameService.group("0") == 0)
        #expect(try NameService.group("gatewayd-test-no-such-group") == nil)
    }

    @Test("a worker account: a uid without a passwd entry needs a group; unknown names are refused by name")
    func workerAccounts() throws {
        let root = try WorkerAccount.resolve(user: "root", group: nil)
        #expect(root.uid == 0 && root.gid == 0 && root.groups.first == 0)
        #expect(root.description == "0 (root)")
        let bare = try WorkerAccount.resolve(user: "4000000", group: "4000001")
        #expect(bare.uid == 4_000_000 && bare.gid == 4_000_001 && bare.groups == [4_000_001])
        #expect(bare.description == "4000000")
        #expect(throws: PrivilegeError.self) { try WorkerAccount.resolve(user: "4000000", group: nil) }
        do {
            _ = try WorkerAccount.resolve(user: "gatewayd-test-no-such-user", group: nil)
            Issue.record("an unknown user was resolved")
        } catch {
            #expect(error.description == "user gatewayd-test-no-such-user: no such user")
        }
        do {
            _ = try WorkerAccount.resolve(user: "root", group: "gatewayd-test-no-such-group")
            Issue.record("an unknown group was resolved")
        } catch {
            #expect(error.description == "group gatewayd-test-no-such-group: no such group")
        }
    }
}
