import Yams

/// A way a route answers a request; a route names exactly one, as a key of its own.
///
/// Adding an action takes a `RouteAction` case, a parse function
/// like `ConfigValidator.directResponse`, and an entry in `all`; the "needs an action" and
/// "more than one action" checks and the allowed route keys follow from `all`.
struct RouteActionKind: Sendable {
    let key: String
    let parse: @Sendable (_ validator: inout ConfigValidator, _ value: Node, _ path: String) -> RouteAction?

    static let all: [RouteActionKind] = [
        RouteActionKind(key: "direct_response") { validator, value, path in
            validator.directResponse(value, path: path).map(RouteAction.directResponse)
        },
        RouteActionKind(key: "upstream") { validator, value, path in
            validator.proxyAction(value, path: path).map(RouteAction.upstream)
        },
        RouteActionKind(key: "redirect") { validator, value, path in
            validator.redirect(value, path: path).map(RouteAction.redirect)
        },
    ]

    static var keys: [String] { all.map(\.key) }

    /// "direct_response", or "one of direct_response, upstream, redirect".
    static var choices: String {
        keys.count == 1 ? keys[0] : "one of " + keys.joined(separator: ", ")
    }
}
