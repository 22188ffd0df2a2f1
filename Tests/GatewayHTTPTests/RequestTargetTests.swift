import GatewayHTTP
import Testing

/// The canonical path of each target, or why it is refused. The integration tests
/// (`HostileRequestTests`) send the same forms to a real worker and an auth route.
@Suite("Request targets: canonical paths")
struct RequestTargetTests {
    typealias Expectation = (target: String, path: String?, query: String?, error: RequestTargetError?)

    static func ok(_ target: String, _ path: String, query: String? = nil) -> Expectation {
        (target, path, query, nil)
    }

    static func refused(_ target: String, _ error: RequestTargetError) -> Expectation {
        (target, nil, nil, error)
    }

    /// Forms an attacker would try against a route guarding `/admin`, each with what it must become.
    static let table: [Expectation] = [
        ok("/admin/users", "/admin/users"),
        ok("/", "/"),
        // Slashes, merged as nginx's merge_slashes does.
        ok("//admin/users", "/admin/users"),
        ok("///admin//users/", "/admin/users/"),
        ok("/admin/users//", "/admin/users/"),
        // Dot segments (RFC 3986 §5.2.4).
        ok("/./admin/users", "/admin/users"),
        ok("/public/../admin/users", "/admin/users"),
        ok("/a/b/../../admin/./users", "/admin/users"),
        ok("/admin/users/.", "/admin/users/"),
        ok("/admin/x/..", "/admin/"),
        ok("/..a/b", "/..a/b"),
        ok("/a.../b", "/a.../b"),
        refused("/..", .aboveRoot),
        refused("/../admin/users", .aboveRoot),
        refused("/a/../../admin", .aboveRoot),
        // Escapes: unreserved decoded, others upper-cased, then dot segments.
        ok("/%61dmin/users", "/admin/users"),
        ok("/%61%64%6D%69%6e/users", "/admin/users"),
        ok("/x/%2e%2e/admin/users", "/admin/users"),
        ok("/x/%2E%2e/admin/users", "/admin/users"),
        ok("/x/.%2e/admin/users", "/admin/users"),
        ok("/%2e/admin/users", "/admin/users"),
        ok("/a%20b/%c3%a9", "/a%20b/%C3%A9"),
        ok("/%7euser/%7E", "/~user/~"),
        ok("/%2561dmin/users", "/%2561dmin/users"),
        refused("/x/%2e%2e/%2e%2e/admin", .aboveRoot),
        refused("/admin%2fusers", .encodedSlash),
        refused("/admin%2Fusers", .encodedSlash),
        refused("/x/..%2fadmin/users", .encodedSlash),
        refused("/x/..%5cadmin", .backslash),
        refused("/x\\..\\admin\\users", .backslash),
        refused("/admin\\users", .backslash),
        refused("/admin/users%00", .controlCharacter),
        refused("/admin/users%0a", .controlCharacter),
        refused("/admin/users%0D%0AX-Injected:%20y", .controlCharacter),
        refused("/admin/users%7f", .controlCharacter),
        refused("/admin\u{1}/users", .controlCharacter),
        refused("/%c0%afadmin", .overlongUTF8),
        refused("/%C1%9Cadmin", .overlongUTF8),
        refused("/admin/users%", .brokenEscape),
        refused("/admin/users%2", .brokenEscape),
        refused("/admin/users%zz", .brokenEscape),
        refused("/admin/users%g0", .brokenEscape),
        // Path parameters: what Tomcat, Jetty and Spring strip.
        refused("/admin;x/users", .semicolon),
        refused("/admin/users;", .semicolon),
        refused("/admin;/users", .semicolon),
        refused("/x/..;/admin/users", .semicolon),
        refused("/admin/users%3bx", .semicolon),
        // The query is passed on as sent.
        ok("/admin/users?x=/../&y=%2F", "/admin/users", query: "x=/../&y=%2F"),
        ok("/a/../b?", "/b", query: ""),
        refused("/admin/users#frag", .fragment),
        refused("/admin/users?x#frag", .fragment),
        // Absolute-form: the same rules for its path.
        ok("http://gw.test/admin/users", "/admin/users"),
        ok("HTTP://gw.test/x/../admin/users", "/admin/users"),
        ok("https://gw.test//admin/users", "/admin/users"),
        ok("http://gw.test:8080/%61dmin?q=1", "/admin", query: "q=1"),
        ok("http://gw.test", "/"),
        ok("http://gw.test?q", "/", query: "q"),
        ok("http://[::1]:80/admin", "/admin"),
        refused("http://user@gw.test/admin/users", .userinfo),
        refused("http://user:pw@gw.test/admin", .userinfo),
        refused("http://[::1/admin", .invalidAuthority),
        refused("http://[::1]x/admin", .invalidAuthority),
        refused("http://:80/admin", .invalidAuthority),
        refused("http:///admin", .invalidAuthority),
        refused("http://gw.test:8o/admin", .invalidAuthority),
        refused("http://gw\"x/admin", .invalidAuthority),
        refused("ftp://gw.test/admin", .unsupportedScheme),
        refused("javascript://gw.test/admin", .unsupportedScheme),
        refused("http:/admin", .notAPath),
        refused("admin/users", .notAPath),
        refused("gw.test:80", .notAPath),
        refused("", .empty),
        ok("*", "*"),
        refused("*/admin", .notAPath),
    ]

    @Test("each form is canonicalised or refused", arguments: table.indices)
    func form(_ index: Int) {
        let expected = Self.table[index]
        do {
            let parsed = try RequestTarget.parse(expected.target)
            #expect(expected.error == nil, "\(expected.target) was accepted as \(parsed.path)")
            #expect(parsed.path == expected.path, "\(expected.target)")
            #expect(parsed.query.map(String.init) == expected.query, "\(expected.target)")
        } catch {
            #expect(error == expected.error, "\(expected.target)")
        }
    }

    @Test("canonical paths stay canonical (canonicalising is idempotent)", arguments: table.indices)
    func idempotent(_ index: Int) throws {
        guard let path = Self.table[index].path, path != "*" else { return }
        let again = try RequestTarget.parse(path)
        #expect(again.path == path)
    }

    @Test("merge_slashes off keeps empty segments; semicolons: allow refuses only '..;'")
    func rules() throws {
        let keep = PathRules(mergeSlashes: false)
        #expect(try RequestTarget.parse("//admin//users", rules: keep).path == "//admin//users")
        #expect(try RequestTarget.parse("/a//../b", rules: keep).path == "/a/b")
        let allow = PathRules(semicolons: .allow)
        #expect(try RequestTarget.parse("/a;jsessionid=1/b;x", rules: allow).path == "/a;jsessionid=1/b;x")
        #expect(throws: RequestTargetError.dotSegmentWithParameters) {
            try RequestTarget.parse("/x/..;/admin", rules: allow)
        }
        #expect(throws: RequestTargetError.dotSegmentWithParameters) {
            try RequestTarget.parse("/x/.;a/admin", rules: allow)
        }
    }

    @Test("a canonical path is returned without a copy")
    func noRewrite() throws {
        var target = "/api/v1/users?id=7"
        let parsed = try target.withUTF8 { try RequestTarget.parse($0) }
        #expect(parsed.rewrittenPath == nil)
        #expect(parsed.path == 0..<13)
        #expect(parsed.query == 14..<18)
    }
}
