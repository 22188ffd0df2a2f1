import ArgumentParser
import GatewayCore

struct LogLevel: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "log-level",
        abstract: "Show the log level of each target, or change it at once in the master and every worker.",
        discussion:
            "No reload and no new process: the master changes its own level and tells every worker of every live generation over its channel; workers started later start at the new level. Targets: supervisor (the master), worker (a worker's own life), proxy (connections and requests, step by step at debug). Without --target, every target. The config has no log level: a reload keeps the level; an upgrade's new master starts at its --log-level."
    )
    @OptionGroup var socket: SocketOptions
    @Argument(help: "trace, debug, info, notice, warning, error or critical; without it, the levels are shown.")
    var level: String?
    @Option(
        name: .long, help: ArgumentHelp("supervisor, worker or proxy (default: every target).", valueName: "target"))
    var target: String?
    @Flag(name: .long, help: "Print the answer as JSON.")
    var json = false

    func validate() throws {
        if level == nil, target != nil { throw ValidationError("--target needs a LEVEL to set") }
    }

    func run() throws {
        let response = try socket.send(ControlRequest(command: .logLevel, level: level, target: target))
        if json { printJSON(response) }
        guard response.ok, let levels = response.logLevels else {
            if !json { printError("log-level failed: \(response.error ?? "no levels in the answer")") }
            throw ExitCode(1)
        }
        guard !json else { return }
        for name in levels.keys.sorted() {
            print("\(name.padding(toLength: 12, withPad: " ", startingAt: 0))\(levels[name]!)")
        }
    }
}
