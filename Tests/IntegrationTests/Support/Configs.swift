/// Config texts for tests. Every listener binds 127.0.0.1 port 0; tests learn the port from
/// `status`.
enum Configs {
    static func hello(
        body: String = "v1", workers: Int = 2, drainTimeout: String = "5s", readyTimeout: String = "10s",
        maxDraining: Int = 4, listeners: [String] = ["web"]
    ) -> String {
        var text = """
            workers: \(workers)
            drain_timeout: \(drainTimeout)
            ready_timeout: \(readyTimeout)
            max_draining_generations: \(maxDraining)
            listeners:

            """
        for name in listeners {
            text += "  - { name: \(name), address: \"127.0.0.1:0\", backlog: 1024 }\n"
        }
        text += """
            routes:
              - name: hello
                match: { path_prefix: / }
                direct_response: { status: 200, headers: { content-type: text/plain }, body: "\(body)" }

            """
        return text
    }
}
