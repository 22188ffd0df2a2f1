// swift-tools-version:6.0
// The floor benchmark's servers (benchmarks/floor.sh): what each layer under gatewayd's data
// path can do on this machine, each answering a fixed 13-byte 200 to every request.
//   floor-nio-raw    SwiftNIO, no HTTP codec: answer after each "\r\n\r\n"
//   floor-nio-http1  SwiftNIO with NIOHTTP1's request decoder (llhttp) only
//   floor-epoll      no framework: one epoll loop per thread, nonblocking sockets
// A package of its own so that the gateway's build never compiles these.
import PackageDescription

let package = Package(
    name: "floor",
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.0")
    ],
    targets: [
        .executableTarget(
            name: "floor-nio-raw",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]),
        .executableTarget(
            name: "floor-nio-http1",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]),
        .target(name: "CFloorEpoll"),
        .executableTarget(name: "floor-epoll", dependencies: ["CFloorEpoll"]),
    ],
    swiftLanguageModes: [.v6]
)
