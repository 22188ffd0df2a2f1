import Foundation
import Testing

/// What operators copy: the example configs, the Kubernetes manifest, the container's config
/// and the systemd units' hardening. (The units run under a live systemd in LiveSystemdTests.)
@Suite("Examples", .timeLimit(.minutes(2)))
struct ExamplesTests {
    static let root = Binaries.packageRoot.path
    static let manifest = root + "/examples/kubernetes/gatewayd.yaml"
    static let schemaCheck = root + "/Tests/IntegrationTests/Support/kubernetes-schema.py"
    /// PyPI's `kubernetes` client, installed by `make test` (the Makefile's KUBERNETES_PYTHON).
    static let kubernetesPython =
        ProcessInfo.processInfo.environment["KUBERNETES_PYTHONPATH"] ?? root + "/.build-tools/python-37.0.2"

    func python(_ arguments: [String]) throws -> CommandResult {
        guard FileManager.default.fileExists(atPath: Self.kubernetesPython + "/kubernetes/__init__.py") else {
            throw HarnessError("no Kubernetes client at \(Self.kubernetesPython): `make test` installs it")
        }
        var environment = ProcessInfo.processInfo.environment
        environment["PYTHONPATH"] = Self.kubernetesPython
        return try runCommand("/usr/bin/env", ["python3"] + arguments, timeout: .seconds(60), environment: environment)
    }

    func check(_ path: String) throws -> CommandResult {
        try runCommand(Binaries.gatewayd, ["check", "-c", path])
    }

    @Test("the Kubernetes manifest is valid against the API schema, and a misspelt field is not")
    func kubernetesSchema() throws {
        let valid = try python([Self.schemaCheck, Self.manifest])
        #expect(valid.status == 0, "\(valid.stdout)\(valid.stderr)")
        #expect(valid.stdout == "\(Self.manifest): 3 documents valid\n")

        let directory = try TemporaryDirectory()
        let broken = directory.file("broken.yaml")
        let text = try String(contentsOfFile: Self.manifest, encoding: .utf8)
        try text.replacingOccurrences(of: "terminationGracePeriodSeconds:", with: "terminationGracePeriod:")
            .replacingOccurrences(of: "containerPort: 9090", with: "containerPort: \"9090\"")
            .write(toFile: broken, atomically: false, encoding: .utf8)
        let invalid = try python([Self.schemaCheck, broken])
        #expect(invalid.status == 1)
        #expect(invalid.stdout.contains("unknown field 'terminationGracePeriod'"), "\(invalid.stdout)")
        #expect(invalid.stdout.contains("containerPort: expected int, got '9090'"), "\(invalid.stdout)")
    }

    @Test("the manifest's settings agree with each other and with gatewayd's config")
    func kubernetesSettings() throws {
        let directory = try TemporaryDirectory()
        let config = directory.file("gatewayd.yaml")
        // The fields that must agree, read by PyYAML (from the Kubernetes client's dependencies).
        let extract = """
            import json, sys, yaml
            docs = list(yaml.safe_load_all(open(sys.argv[1])))
            config_map = next(d for d in docs if d["kind"] == "ConfigMap")
            open(sys.argv[2], "w").write(config_map["data"]["gatewayd.yaml"])
            pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]
            container = pod["spec"]["containers"][0]
            config = yaml.safe_load(config_map["data"]["gatewayd.yaml"])
            print(json.dumps({
                "grace": pod["spec"]["terminationGracePeriodSeconds"],
                "pre_stop": container["lifecycle"]["preStop"]["exec"]["command"],
                "drain_timeout": config["drain_timeout"],
                "image": container["image"],
                "ports": {p["name"]: p["containerPort"] for p in container["ports"]},
                "readiness": container["readinessProbe"]["httpGet"],
                "liveness": container["livenessProbe"]["httpGet"],
                "annotations": pod["metadata"]["annotations"],
                "resources": container["resources"],
                "listeners": {l["name"]: l["address"] for l in config["listeners"]},
                "admin": config["admin"]["listener"],
                "config_arg": container["command"][container["command"].index("--config") + 1],
            }))
            """
        let result = try python(["-c", extract, Self.manifest, config])
        #expect(result.status == 0, "\(result.stderr)")
        let values = try #require(
            try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any], "\(result.stdout)")

        // The grace period covers the preStop sleep, the drain and the 2 s kill grace at its end.
        let sleep = try #require((values["pre_stop"] as? [String])?.last.flatMap { Int($0) })
        let drain = try #require((values["drain_timeout"] as? String).flatMap { Int($0.dropLast()) })
        let grace = try #require(values["grace"] as? Int)
        #expect(sleep >= 1 && grace > sleep + drain + 2, "grace \(grace), sleep \(sleep), drain \(drain)")
        let image = try #require(values["image"] as? String)
        #expect(!image.hasSuffix(":latest") && (image.split(separator: "/").last?.contains(":") ?? false), "\(image)")

        // Probes and scraping go to the admin listener's port, where /readyz and /metrics are.
        let ports = try #require(values["ports"] as? [String: Int])
        let listeners = try #require(values["listeners"] as? [String: String])
        let adminPort = try #require(listeners[values["admin"] as? String ?? ""]?.split(separator: ":").last)
        #expect(ports["metrics"].map(String.init) == String(adminPort))
        #expect((values["readiness"] as? [String: String]) == ["path": "/readyz", "port": "metrics"])
        #expect((values["liveness"] as? [String: String]) == ["path": "/healthz", "port": "metrics"])
        let annotations = try #require(values["annotations"] as? [String: String])
        #expect(annotations["prometheus.io/scrape"] == "true" && annotations["prometheus.io/path"] == "/metrics")
        #expect(annotations["prometheus.io/port"] == String(adminPort))
        let resources = try #require(values["resources"] as? [String: [String: String]])
        #expect(resources["requests"]?["memory"] != nil && resources["limits"]?["memory"] != nil)

        // The config it mounts is the one the command names, and gatewayd takes it without a word.
        #expect(values["config_arg"] as? String == "/etc/gatewayd/gatewayd.yaml")
        let checked = try check(config)
        #expect(checked.status == 0 && checked.stderr.isEmpty, "\(checked)")
    }

    @Test("every example config and the container's config check clean, without warnings")
    func exampleConfigs() throws {
        for file in ["examples/gateway.yaml", "examples/gateway-proxy.yaml", "packaging/container/gatewayd.yaml"] {
            let result = try check(Self.root + "/" + file)
            #expect(result.status == 0 && result.stderr.isEmpty, "\(file): \(result)")
        }
    }

    @Test("the TLS example checks clean with the certificate its script makes, and not without one")
    func tlsExample() throws {
        let directory = try TemporaryDirectory()
        let config = directory.file("gateway-tls.yaml")
        try FileManager.default.copyItem(atPath: Self.root + "/examples/gateway-tls.yaml", toPath: config)
        let missing = try check(config)
        #expect(missing.status != 0 && missing.stderr.contains("tls/localhost.pem"), "\(missing)")
        let made = try runCommand(
            Self.root + "/examples/make-tls-certificate.sh", [directory.file("tls"), "localhost"])
        #expect(made.status == 0, "\(made)")
        let result = try check(config)
        #expect(result.status == 0 && result.stderr.isEmpty, "\(result)")
    }

    @Test("the systemd units' exposure stays at or below 2.0 in systemd-analyze security")
    func unitHardening() throws {
        for unit in ["gatewayd.service", "gatewayd-debian12.service"] {
            let result = try runCommand(
                "/usr/bin/systemd-analyze",
                ["security", "--offline=true", "--no-pager", Self.root + "/examples/systemd/" + unit])
            let line = result.stdout.split(separator: "\n").first { $0.contains("Overall exposure level") }
            let score = line.flatMap { $0.split(separator: ":").last?.split(separator: " ").first }.flatMap {
                Double($0)
            }
            #expect(score.map { $0 <= 2.0 } ?? false, "\(unit): \(line.map(String.init) ?? result.stdout)")
        }
    }
}
