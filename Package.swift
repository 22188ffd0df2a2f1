// swift-tools-version:6.1
import PackageDescription

// The data path's modules (GatewayHTTP, GatewayIO, Gateway) skip Swift's dynamic exclusivity
// checks in release builds: perf put swift_beginAccess, AccessSet::insert and the TLS lookup
// they make at about 15 % of a worker's user time on the proxy benchmark (docs/benchmarks.md).
// Debug builds, where the tests are written and run while developing, keep the checks.
let dataPathSettings: [SwiftSetting] = [
    .unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))
]

let package = Package(
    name: "gatewayd",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "gatewayd", targets: ["gatewayd"]),
        .executable(name: "gatewayctl", targets: ["gatewayctl"]),
    ],
    // OpenTelemetry export (docs/observability.md, "Tracing"): swift-otel and what its OTLP/HTTP
    // exporter needs (AsyncHTTPClient, swift-nio-ssl, SwiftProtobuf) take minutes to build and
    // megabytes to link, for a feature off by default; the default build has only the tracing
    // API (swift-distributed-tracing). `make release TRACING=1` / `make test-tracing`.
    traits: [
        .trait(name: "OTLPTracing", description: "Export spans by OTLP/HTTP through swift-otel")
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-system.git", from: "1.4.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.6.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.0.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.5.0"),
        .package(url: "https://github.com/apple/swift-nio-http2.git", from: "1.46.0"),
        .package(url: "https://github.com/apple/swift-distributed-tracing.git", from: "1.7.3"),
        // OTLP/HTTP only: its default traits would add the gRPC exporter (grpc-swift-2 and its
        // HTTP/2 transport), which gatewayd does not offer.
        .package(url: "https://github.com/swift-otel/swift-otel.git", from: "1.6.0", traits: ["OTLPHTTP"]),
    ],
    targets: [
        // What Swift cannot import: the CMSG_* macros for SCM_RIGHTS, struct ucred for SO_PEERCRED,
        // close_range and posix_spawn_file_actions_addclosefrom_np.
        .target(name: "CGatewayShim"),
        // libsystemd (Debian: libsystemd-dev) for sd_notify and socket activation.
        .systemLibrary(
            name: "CSystemd",
            pkgConfig: "libsystemd",
            providers: [.apt(["libsystemd-dev"])]
        ),
        // No networking framework here: fds, syscalls, the handoff and control protocols.
        .target(
            name: "GatewayCore",
            dependencies: [
                "CGatewayShim",
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Client-side wire formats with no I/O (SwiftNIO's NIOHTTP1/NIOPosix split): HTTP/1.1
        // request targets and their canonical paths, the PROXY protocol header. The config
        // validator and the worker share it.
        .target(name: "GatewayHTTP", dependencies: ["GatewayCore"], swiftSettings: dataPathSettings),
        .target(
            name: "GatewayConfig",
            dependencies: [
                "CGatewayTLS",
                "GatewayCore",
                "GatewayHTTP",
                .product(name: "Yams", package: "Yams"),
            ]
        ),
        // What the worker's event loop needs that Glibc's Swift module lacks: epoll, eventfd, accept4.
        .target(name: "CGatewayIO"),
        // TLS over the system's OpenSSL (Debian: libssl-dev), driving the connection's own
        // nonblocking socket as nginx does; why not swift-nio-ssl: docs/architecture.md, "TLS".
        .target(
            name: "CGatewayTLS",
            linkerSettings: [.linkedLibrary("ssl"), .linkedLibrary("crypto")]
        ),
        // The worker's event loop (one thread, one epoll set, nginx's model) and its buffers: no
        // HTTP. Why not SwiftNIO on the data path: EventLoop.swift and docs/benchmarks.md.
        .target(name: "GatewayIO", dependencies: ["CGatewayIO", "GatewayCore"], swiftSettings: dataPathSettings),
        // A process's tracer and the exporter behind it (TracingBackend): swift-otel only with
        // the OTLPTracing trait; without it, the tracing API alone.
        .target(
            name: "GatewayTracing",
            dependencies: [
                "GatewayConfig",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(
                    name: "ServiceLifecycle", package: "swift-service-lifecycle",
                    condition: .when(traits: ["OTLPTracing"])),
                .product(name: "OTel", package: "swift-otel", condition: .when(traits: ["OTLPTracing"])),
            ]
        ),
        // The worker: HTTP/1.1 and HTTP/2 on the handed-off fds.
        .target(
            name: "Gateway",
            dependencies: [
                "CGatewayShim",
                "CGatewayIO",
                "CGatewayTLS",
                "GatewayCore",
                "GatewayConfig",
                "GatewayHTTP",
                "GatewayIO",
                // HPACK only: the HTTP/2 frames are read and written on the worker's own loop
                // (Sources/Gateway/HTTP2; why: docs/architecture.md, "HTTP/2").
                .product(name: "NIOHPACK", package: "swift-nio-http2"),
                "GatewayTracing",
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Metrics", package: "swift-metrics"),
            ],
            swiftSettings: dataPathSettings
        ),
        // SwiftNIO pieces of the master (accepting under fd exhaustion on its control socket).
        .target(
            name: "GatewayNIO",
            dependencies: [
                "GatewayCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The master: generations, reloads, the control server, signals, sd_notify.
        .target(
            name: "GatewaySupervisor",
            dependencies: [
                "CSystemd",
                "CGatewayShim",
                "GatewayCore",
                "GatewayNIO",
                "GatewayConfig",
                "GatewayTracing",
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ]
        ),
        .executableTarget(
            name: "gatewayd",
            dependencies: [
                "GatewaySupervisor",
                "Gateway",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "gatewayctl",
            dependencies: [
                "GatewayCore",
                // DurationText, for --timeout.
                "GatewayConfig",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(name: "GatewayCoreTests", dependencies: ["GatewayCore", "CGatewayShim"]),
        .testTarget(name: "GatewayConfigTests", dependencies: ["GatewayConfig"]),
        // The parser's differential test runs llhttp through NIOHTTP1 as the reference.
        .testTarget(
            name: "GatewayHTTPTests",
            dependencies: [
                "GatewayHTTP", "GatewayCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ]),
        .testTarget(
            name: "GatewayTests",
            dependencies: [
                "Gateway", "GatewayCore", "GatewayIO", "CGatewayShim",
                .product(name: "CoreMetrics", package: "swift-metrics"),
                // RequestTraceTests: the worker's spans without an exporter.
                .product(name: "InMemoryTracing", package: "swift-distributed-tracing"),
                // HTTP2ResponseFieldsTests: the worker's header blocks, decoded.
                .product(name: "NIOHPACK", package: "swift-nio-http2"),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        .testTarget(name: "GatewaySupervisorTests", dependencies: ["GatewaySupervisor"]),
        // Support/clients.py: Python test clients the tests run as processes, not a resource;
        // the same for the scripts beside it.
        .testTarget(
            name: "IntegrationTests",
            dependencies: ["GatewayCore", "CGatewayShim"],
            exclude: [
                "Support/clients.py", "Support/live-systemd.sh", "Support/kubernetes-schema.py",
                "Support/tls-upstream.py", "Support/otlp-receiver.py",
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
