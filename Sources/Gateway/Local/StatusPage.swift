import Foundation
import GatewayCore

#if canImport(Glibc)
    import Glibc
#endif

/// `/status` on the admin listener: the master, its generations and their workers, the
/// connections, the recent reloads with their phases and changes, and the log levels, as
/// plain HTML and CSS (no JavaScript), refreshing itself. Rendered from the master's last
/// snapshot (`StatusBoard`); every text in it is escaped.
enum StatusPage {
    /// The page reloads itself this often: about the pace at which the master sends a changed
    /// snapshot (0.5 s), slow enough not to be a load.
    static let refreshSeconds = 2

    static func render(_ snapshot: StatusSnapshot?) -> String {
        var html = """
            <!doctype html>
            <html lang="en"><head><meta charset="utf-8">
            <meta http-equiv="refresh" content="\(refreshSeconds)">
            <meta name="viewport" content="width=device-width, initial-scale=1">
            <title>gatewayd status</title>
            <style>\(style)</style></head><body>

            """
        guard let snapshot else {
            html += "<h1>gatewayd</h1><p class=\"muted\">Waiting for the master's first status (a moment).</p>"
            return html + "</body></html>\n"
        }
        let status = snapshot.status
        html += """
            <header><h1>gatewayd <span class="version">\(escape(status.version ?? "?"))</span></h1>
            <p>master pid \(status.masterPid) · <span class="state \(escape(status.state.rawValue))">\(escape(status.state.rawValue))</span>
            · config <code>\(escape(status.configPath))</code> · reloads \(status.reloads) (\(status.failedReloads) failed)
            · reload phase <b>\(escape(status.reloadPhase.rawValue))</b></p>
            <p>log levels: \(snapshot.logLevels.sorted { $0.key < $1.key }.map { "\(escape($0.key)) <b>\(escape($0.value))</b>" }.joined(separator: " · "))
            · this page from worker pid \(getpid()) at \(timestamp(snapshot.time))</p></header>

            """
        html +=
            "<h2>Generations</h2>\n<table class=\"generations\"><tr><th>generation</th><th>state</th><th>connections</th><th>workers (pid, state, connections, restarts)</th></tr>\n"
        for generation in status.generations.reversed() {
            let connections = generation.workers.map(\.connections).reduce(0, +)
            let workers = generation.workers.map {
                "<span class=\"worker \($0.state.rawValue)\">#\($0.index) \($0.pid) \($0.state.rawValue) · \($0.connections) · \($0.restarts)</span>"
            }.joined(separator: " ")
            let degraded = generation.degraded.map { "<div class=\"degraded\">degraded: \(escape($0))</div>" } ?? ""
            html += """
                <tr class="\(generation.state.rawValue)" id="generation-\(generation.id)"><td>\(generation.id)</td><td><span class="state \(generation.state.rawValue)">\(generation.state.rawValue)</span></td><td>\(connections)</td><td>\(workers)\(degraded)</td></tr>

                """
        }
        html += "</table>\n"
        html +=
            "<h2>Listeners</h2>\n<p>"
            + status.listeners.map { "<code>\(escape($0.name))</code> \(escape($0.address)) (\($0.origin.rawValue))" }
            .joined(separator: " · ") + "</p>\n"
        html +=
            "<h2>Recent events</h2>\n<table class=\"events\"><tr><th>#</th><th>time (UTC)</th><th>event</th><th>phases (ms)</th><th>what</th></tr>\n"
        for event in snapshot.events.reversed() {
            html += row(event)
        }
        html += "</table>\n"
        return html + "</body></html>\n"
    }

    private static func row(_ event: GatewayEvent) -> String {
        let outcome = event.outcome.map { " <span class=\"outcome \($0.rawValue)\">\($0.rawValue)</span>" } ?? ""
        var title = escape(event.type.rawValue) + outcome
        if let generation = event.generation { title += " · generation \(generation)" }
        if let worker = event.worker { title += " · worker \(worker)" }
        var what: [String] = []
        if let trigger = event.trigger { what.append("by \(escape(trigger))") }
        if let level = event.level { what.append("level <b>\(escape(level))</b> for \(escape(event.target ?? "all"))") }
        if let connections = event.connections {
            what.append("\(connections) connection\(connections == 1 ? "" : "s") at the start")
        }
        if let reason = event.reason { what.append("<span class=\"reason\">\(escape(reason))</span>") }
        for detail in event.details ?? [] { what.append("<code>\(escape(detail))</code>") }
        if let diff = event.diff { what.append("changes: \(escape(describe(diff)))") }
        return """
            <tr class="event \(escape(event.type.rawValue))"><td>\(event.id)</td><td>\(timestamp(event.time))</td><td>\(title)</td><td class="phases">\(phases(event))</td><td>\(what.joined(separator: "<br>"))</td></tr>

            """
    }

    /// Each phase as a bar whose width is its share of the total, and its time.
    private static func phases(_ event: GatewayEvent) -> String {
        guard let phases = event.phases, !phases.isEmpty else { return "" }
        let order = ["validate", "bind", "spawn", "ready", "switch", "drain"]
        let total = max(phases.values.reduce(0, +), 0.001)
        var bar = "<div class=\"bar\">"
        var legend: [String] = []
        for name in order {
            guard let ms = phases[name] else { continue }
            let width = max(1, Int((ms / total * 100).rounded()))
            bar += "<span class=\"phase \(name)\" style=\"width:\(width)%\" title=\"\(name) \(format(ms)) ms\"></span>"
            legend.append("<span class=\"key \(name)\">\(name) \(format(ms))</span>")
        }
        return bar + "</div>" + legend.joined(separator: " ")
    }

    private static func describe(_ diff: GatewayEvent.Diff) -> String {
        var parts: [String] = []
        for (label, names) in [
            ("listeners added", diff.listenersAdded), ("listeners removed", diff.listenersRemoved),
            ("listeners changed", diff.listenersChanged), ("routes added", diff.routesAdded),
            ("routes removed", diff.routesRemoved), ("routes changed", diff.routesChanged),
            ("upstreams changed", diff.upstreamsChanged),
        ] where !names.isEmpty {
            parts.append("\(label): \(names.joined(separator: ", "))")
        }
        return (parts + diff.settings).joined(separator: "; ").nilIfEmpty ?? "none"
    }

    private static func format(_ ms: Double) -> String {
        String(format: "%.1f", ms)
    }

    private static func timestamp(_ time: Double) -> String {
        var seconds = time_t(time)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        return String(
            format: "%04d-%02d-%02d %02d:%02d:%02d", parts.tm_year + 1900, parts.tm_mon + 1, parts.tm_mday,
            parts.tm_hour, parts.tm_min, parts.tm_sec)
    }

    /// Text into HTML: `&`, `<`, `>`, `"` and `'`.
    static func escape(_ text: String) -> String {
        var escaped = ""
        escaped.reserveCapacity(text.utf8.count)
        for character in text {
            switch character {
            case "&": escaped += "&amp;"
            case "<": escaped += "&lt;"
            case ">": escaped += "&gt;"
            case "\"": escaped += "&quot;"
            case "'": escaped += "&#39;"
            default: escaped.append(character)
            }
        }
        return escaped
    }

    static let style = """
        body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5rem 2rem;color:#1d2330;background:#f7f8fa}
        h1{font-size:1.5rem;margin:0 0 .3rem}h1 .version{font-weight:400;color:#5b6475}
        h2{font-size:1.05rem;margin:1.6rem 0 .5rem;color:#39414f}
        header p{margin:.2rem 0;color:#39414f}code{font:12px ui-monospace,monospace;background:#eceff3;padding:0 .25rem;border-radius:3px}
        table{border-collapse:collapse;width:100%;background:#fff;box-shadow:0 1px 2px #0001}
        th,td{text-align:left;padding:.35rem .6rem;border-bottom:1px solid #e6e9ee;vertical-align:top}th{font-weight:600;font-size:12px;color:#5b6475;background:#f0f2f5}
        .state{padding:.05rem .45rem;border-radius:9px;font-size:12px;background:#e6e9ee}
        .state.serving,.state.running{background:#d5f2dd;color:#125c2a}.state.draining{background:#fdf0cf;color:#7a5300}.state.failed{background:#fbdada;color:#8a1c1c}
        .worker{display:inline-block;margin:0 .4rem .2rem 0;padding:.05rem .4rem;border:1px solid #d8dde5;border-radius:4px;font:12px ui-monospace,monospace}
        .worker.ready{border-color:#9fd8b0}.worker.draining{border-color:#f0d48a}.degraded{color:#8a1c1c;font-weight:600}
        .outcome{font-size:12px;padding:0 .35rem;border-radius:3px}.outcome.ok{background:#d5f2dd;color:#125c2a}.outcome.failed{background:#fbdada;color:#8a1c1c}
        .reason{color:#8a1c1c}.muted{color:#7a8291}.events td:nth-child(-n+3){white-space:nowrap}
        .bar{display:flex;width:16rem;height:.6rem;border-radius:3px;overflow:hidden;background:#eceff3;margin:.2rem 0}
        .phase{display:block;height:100%}.key{font:11px ui-monospace,monospace;white-space:nowrap}
        .key::before{content:"";display:inline-block;width:.55rem;height:.55rem;margin-right:.2rem;border-radius:2px}
        .phase.validate,.key.validate::before{background:#7aa2f7}.phase.bind,.key.bind::before{background:#9ece6a}
        .phase.spawn,.key.spawn::before{background:#e0af68}.phase.ready,.key.ready::before{background:#bb9af7}
        .phase.switch,.key.switch::before{background:#f7768e}.phase.drain,.key.drain::before{background:#73daca}
        """
}

extension String {
    fileprivate var nilIfEmpty: String? { isEmpty ? nil : self }
}
