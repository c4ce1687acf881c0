"""The periodic oversight report as one self-contained HTML page: inline styles and SVG plots,
no script and nothing fetched. Every shown figure names where it comes from in a
``data-figure`` attribute, and the figures themselves ride along as JSON
(``<script type="application/json" id="tandem-figures">``, never run)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape

from tandem_cli.figures import interval, share
from tandem_cli.oversight import Figures
from tandem_cli.svg import Series, bar_chart, line_chart

STYLE = " ".join(
    [
        "body{font:14px/1.45 system-ui,sans-serif;color:#1b1b1b;max-width:980px;",
        "margin:24px auto;padding:0 16px}h1{font-size:22px;margin-bottom:2px}",
        "h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ccc}",
        "table{border-collapse:collapse;margin:8px 0}",
        "td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}",
        "th:first-child,td:first-child{text-align:left}.muted{color:#666}",
        "code{font-size:12px;word-break:break-all}svg{display:block;margin:4px 0}",
        "figure{margin:16px 0}figcaption{font-weight:600;font-size:13px}",
        "@media print{svg{break-inside:avoid}}",
    ]
)
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.1f} s"


def render(figures: Figures) -> str:
    """The whole page."""
    sections = [
        _heading(figures),
        _outcomes(figures),
        _plots(figures),
        _segments(figures),
        _drift(figures),
        _incidents_and_risks(figures),
        _changes(figures),
        _feedback(figures),
        _trace(figures),
    ]
    data = figures.model_dump_json().replace("</", "<\\/")
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f"<title>Tandem oversight report {escape(figures.period)}</title>"
        f"<style>{STYLE}</style></head><body>"
        + "".join(sections)
        + f'<script type="application/json" id="tandem-figures">{data}</script>'
        + "</body></html>"
    )


def _figure(name: str, text: str) -> str:
    return f'<td data-figure="{escape(name)}">{escape(text)}</td>'


def _table(headers: Sequence[str], rows: Iterable[str]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(rows)
    return f"<table><tr>{head}</tr>{body}</table>" if body else "<p class=muted>none</p>"


def _heading(f: Figures) -> str:
    return (
        f"<h1>Tandem oversight report, {escape(f.period)}</h1>"
        f"<p class=muted>{f.since:%Y-%m-%d} to {f.until:%Y-%m-%d} (UTC, the end excluded); "
        f"generated {f.generated_at:%Y-%m-%d %H:%M} UTC</p>"
    )


def _outcomes(f: Figures) -> str:
    o = f.overall
    people, automatic = o["seconds_to_decision"]["people"], o["seconds_to_decision"]["automatic"]
    rows = [
        ("decisions", "decisions", f"{o['decisions']:,}"),
        ("decided automatically", "automatic", f"{o['automatic']:,}"),
        ("decided by people", "by_people", f"{o['by_people']:,}"),
        ("policy fallbacks (overdue)", "by_policy_fallback", f"{o['by_policy_fallback']:,}"),
        ("automation rate", "automation_rate", share(o["automation_rate"])),
        ("people overriding the model", "override_rate", share(o["override_rate"])),
        ("QA samples reviewed", "qa_samples_reviewed", f"{o['qa_samples_reviewed']:,}"),
        ("accuracy of automatic decisions (QA)", "qa_accuracy", share(o["qa_accuracy"])),
        ("its 95% interval (Wilson)", "qa_accuracy_interval", interval(o["qa_accuracy_interval"])),
        ("time to decision p50, automatic", "p50.automatic", seconds(automatic["p50"])),
        ("time to decision p50, people", "p50.people", seconds(people["p50"])),
        ("time to decision p90, people", "p90.people", seconds(people["p90"])),
        ("SLA breaches", "sla_breaches", f"{o['sla_breaches']:,}"),
        ("reviewer hours saved", "reviewer_hours_saved", f"{o['reviewer_hours_saved']:,.1f}"),
    ]
    body = (
        f"<tr><td>{escape(label)}</td>{_figure(f'overall.{name}', text)}</tr>"
        for label, name, text in rows
    )
    return "<h2>Outcomes</h2>" + _table(("", f.period), body)


def _plots(f: Figures) -> str:
    days = [d["key"] for d in f.days]
    rates = line_chart(
        "Automation and override rates by day",
        days,
        [
            Series("automation rate", [d["automation_rate"] for d in f.days]),
            Series("override rate", [d["override_rate"] for d in f.days]),
        ],
    )
    accuracy = line_chart(
        "Accuracy of automatic decisions from QA samples, with 95% intervals",
        days,
        [
            Series(
                "QA accuracy",
                [d["qa_accuracy"] for d in f.days],
                [d["qa_accuracy_interval"] for d in f.days],
            )
        ],
    )
    waits = line_chart(
        "Time to decision by day, p50 (seconds)",
        days,
        [
            Series("automatic", [d["seconds_to_decision"]["automatic"]["p50"] for d in f.days]),
            Series("people", [d["seconds_to_decision"]["people"]["p50"] for d in f.days]),
        ],
        share=False,
    )
    breaches = bar_chart(
        "SLA breaches by day", {d["key"][5:]: d["sla_breaches"] for d in f.days}, share=False
    )
    return "<h2>Over the period</h2>" + (
        rates + accuracy + waits + breaches if days else "<p class=muted>no decisions</p>"
    )


def _segments(f: Figures) -> str:
    rows = []
    for s in f.segments:
        gaps = s["disparity"]
        key = f"segments.{s['key']}"
        rows.append(
            f"<tr><td>{escape(s['key'])}</td>"
            + _figure(f"{key}.decisions", f"{s['decisions']:,}")
            + _figure(f"{key}.automation_rate", share(s["automation_rate"]))
            + _figure(f"{key}.automation_gap", _points(gaps["automation_rate"]))
            + _figure(f"{key}.override_rate", share(s["override_rate"]))
            + _figure(f"{key}.override_gap", _points(gaps["override_rate"]))
            + _figure(f"{key}.qa_accuracy", share(s["qa_accuracy"]))
            + _figure(f"{key}.qa_accuracy_interval", interval(s["qa_accuracy_interval"]))
            + _figure(f"{key}.qa_accuracy_gap", _points(gaps["qa_accuracy"]))
            + "</tr>"
        )
    headers = (
        "segment", "decisions", "automation", "gap", "overrides", "gap",
        "QA accuracy", "95% interval", "gap",
    )  # fmt: skip
    plot = ""
    automated = {
        s["key"]: s["automation_rate"] for s in f.segments if s["automation_rate"] is not None
    }
    if automated:
        plot = bar_chart(
            "Automation rate by segment (dashed: all tasks)",
            automated,
            mark=f.overall["automation_rate"],
        )
    return (
        "<h2>Fair outcomes by segment</h2><p class=muted>Each segment against all tasks of the "
        "period; gaps in points. The policy's <code>segments</code> name the attributes.</p>"
        + _table(headers, rows)
        + plot
    )


def _points(gap: dict[str, float | None]) -> str:
    difference = gap["difference"]
    return "n/a" if difference is None else f"{difference * 100:+.1f}"


def _drift(f: Figures) -> str:
    rows = (
        f"<tr><td>{escape(d.model)}/{escape(d.version)}: {escape(d.feature)}</td>"
        + _figure(f"drift.{d.model}/{d.version}/{d.feature}.votes", f"{d.votes:,}")
        + _figure(f"drift.{d.model}/{d.version}/{d.feature}.alarms", f"{d.alarms:,}")
        + _figure(
            f"drift.{d.model}/{d.version}/{d.feature}.max_psi",
            "n/a" if d.max_psi is None else f"{d.max_psi:.3f}",
        )
        + "</tr>"
        for d in f.drift
    )
    days = sorted({day for d in f.drift for day in d.daily_max_psi})
    plot = ""
    if days:
        plot = line_chart(
            "Largest PSI of each day, per feature (0.2: the alarm)",
            days,
            [Series(d.feature, [d.daily_max_psi.get(day) for day in days]) for d in f.drift],
            share=False,
        )
    return (
        "<h2>Drift per feature</h2>"
        + _table(("feature", "votes", "alarms", "largest PSI"), rows)
        + plot
    )


def _incidents_and_risks(f: Figures) -> str:
    incidents = (
        f"<tr><td>{escape(i['id'])}: {escape(i['title'])}</td>"
        f"<td>{escape(i['status'])}</td><td>{escape(i['timeline'][0]['at'][:16])}</td>"
        f"<td>{escape(', '.join(i['risks']) or '–')}</td><td>{len(i['timeline'])}</td></tr>"
        for i in f.incidents
    )
    risks = (
        f"<tr><td>{escape(r['id'])}: {escape(r['title'])}</td><td>{escape(r['likelihood'])}</td>"
        f"<td>{escape(r['impact'])}</td><td>{escape(r['owner'])}</td>"
        f"<td>{len(r['mitigations'])}</td>"
        f"<td>{escape(r['review_by'])}{' (overdue)' if r['review_overdue'] else ''}</td></tr>"
        for r in f.risks
    )
    return (
        "<h2>Incidents</h2>"
        + _table(("incident", "status", "opened", "risks", "steps"), incidents)
        + "<h2>Risks</h2>"
        + _table(("risk", "likelihood", "impact", "owner", "mitigations", "review by"), risks)
    )


def _changes(f: Figures) -> str:
    rows = (
        f"<tr><td>{c.at:%Y-%m-%d %H:%M}</td><td>{escape(c.kind)}</td><td>{escape(c.name)}</td>"
        f"<td>{escape(c.what)}</td><td>{escape(c.changed_by)}</td><td>{c.seq}</td></tr>"
        for c in f.changes
    )
    return "<h2>Model and policy changes</h2>" + _table(
        ("when (UTC)", "kind", "name", "what", "by", "ledger seq"), rows
    )


def _feedback(f: Figures) -> str:
    rows = (
        f"<tr><td>{escape(r['task_type'])}, {escape(r['model'])}</td>"
        + _figure(f"feedback.{r['task_type']}.{r['model']}.rated", f"{r['rated']:,}")
        + _figure(
            f"feedback.{r['task_type']}.{r['model']}.explanation_useful",
            _mean(r["explanation_useful"]),
        )
        + _figure(f"feedback.{r['task_type']}.{r['model']}.trust", _mean(r["trust"]))
        + f"<td>{r['notes']:,}</td><td>{sum(r['flags'].values()):,}</td></tr>"
        for r in f.reviewer_feedback
    )
    return "<h2>What reviewers said of the model</h2>" + _table(
        ("model", "rated", "explanations useful (1-5)", "trust (1-5)", "notes", "flags"), rows
    )


def _mean(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _trace(f: Figures) -> str:
    c = f.checkpoint
    if c is None:
        return "<h2>Tracing the figures</h2><p>The ledger had no signed checkpoint.</p>"
    return (
        "<h2>Tracing the figures</h2><p>Every decision and change counted here is an entry of "
        "the audit ledger, whose latest signed checkpoint when this report was made was:</p>"
        + _table(
            ("", ""),
            [
                f"<tr><td>tree size</td>{_figure('checkpoint.tree_size', str(c['tree_size']))}"
                "</tr>",
                f"<tr><td>root</td><td><code>{escape(c['root_hash'])}</code></td></tr>",
                f"<tr><td>signed at</td><td>{escape(str(c['issued_at']))}</td></tr>",
                f"<tr><td>by key</td><td><code>{escape(str(c.get('key_id')))}</code></td></tr>",
                f"<tr><td>origin</td><td>{escape(c['origin'])}</td></tr>",
            ],
        )
        + "<p class=muted>Prove any entry against it with <code>tandem audit prove</code> and "
        "<code>tandem audit check</code>; the figures themselves are in this page as JSON "
        "(<code>#tandem-figures</code>).</p>"
    )
