// The equity dashboard: reads GET /v1/reports/equity with the token the user gives, draws
// each group as an SVG chart with a table behind it, and offers each table as CSV. No
// library, no build step; the token stays in this tab's memory and is only ever sent in the
// Authorization header.
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";
  // At least 3:1 against white (WCAG 1.4.11), told apart by order and the table too.
  const COLOURS = ["#1f5fa8", "#b3470f", "#2e7d32", "#7b3fa0", "#8a6d00", "#c2185b"];
  const LABELS = {
    none: "None", at_risk: "At risk", excluded: "Excluded", no_plan: "No plan",
    no_device: "No device", no_connectivity: "No connectivity",
    limited_connectivity: "Limited connectivity", no_digital_skills: "No digital skills",
    in_person: "In person", video: "Video", telephone: "Telephone", text: "Text",
    yes: "Yes", no: "No", proceed: "Proceed", proceed_with_actions: "Proceed with actions",
    do_not_proceed: "Do not proceed", not_preferred: "Not preferred",
    not_appropriate: "Not appropriate", not_accessible: "Not accessible",
    technology_failure: "Technology failure", clinical_risk: "Clinical risk",
    first_appointment: "First appointment", routine: "Routine", urgent: "Urgent",
    emergency: "Emergency", p50: "Median (p50)", p90: "90th percentile",
    share: "Scheduled by the due time", referrals_overdue: "Referrals overdue now",
    reviews_overdue: "Plan reviews overdue"
  };
  // One figure per group: where its counts are and how to draw them.
  const FIGURES = [
    { id: "plans-level", title: "Plans written, by digital exclusion level",
      note: "Plans created or revised in each period, by their level at its end (EXCL-1). Total: all current plans.",
      path: ["plans", "by_exclusion_level"] },
    { id: "plans-factor", title: "Plans written, by exclusion factor",
      note: "A plan can have several factors, or none. Total: all current plans.",
      path: ["plans", "by_factor"] },
    { id: "recs-modality", title: "Recommended modality",
      note: "Recommendations made in each period.", path: ["recommendations", "by_modality"] },
    { id: "recs-level", title: "Recommendations by the plan's exclusion level",
      note: "Level of the service user's plan when the recommendation was made.",
      path: ["recommendations", "by_exclusion_level"] },
    { id: "recs-first", title: "First preference honoured",
      note: "Whether the recommendation was the service user's first choice (FLEX-2).",
      path: ["recommendations", "first_preference_honoured"] },
    { id: "checks-outcome", title: "Start-of-session safety checks",
      note: "Outcome of each check run in the period (SAFE-1–3).",
      path: ["session_checks", "by_outcome"] },
    { id: "referrals-reason", title: "Fallback referrals by reason",
      note: "Face-to-face referrals requested in the period (F2F-1).",
      path: ["referrals", "by_reason"] },
    { id: "referrals-urgency", title: "Fallback referrals by urgency",
      note: "Face-to-face referrals requested in the period.", path: ["referrals", "by_urgency"] },
    { id: "referrals-share", title: "Referrals scheduled by their due time", kind: "share",
      note: "Share of referrals scheduled, or past due unscheduled, that were scheduled in time. Withheld below the threshold.",
      pick: (g) => ({ share: g.referrals.scheduled_before_due_share }) },
    { id: "referrals-hours", title: "Hours from request to scheduled", kind: "line",
      note: "Median and 90th percentile; withheld below the threshold.",
      pick: (g) => g.referrals.hours_to_scheduled },
    { id: "overdue", title: "Overdue now",
      note: "Referrals requested in the period and overdue now; plan reviews that fell due in the period and are not done. Total: all overdue now.",
      pick: (g) => ({ referrals_overdue: g.referrals.overdue, reviews_overdue: g.plans.review_overdue }) }
  ];

  let token = null;
  let report = null;
  const $ = (id) => document.getElementById(id);

  function status(text, error) {
    const s = $("status");
    s.textContent = text;
    s.className = error ? "error" : "";
    s.setAttribute("role", error ? "alert" : "status");
  }

  // A token in the fragment (#token=…) is taken and removed from the address bar at once.
  function tokenFromFragment() {
    const params = new URLSearchParams(location.hash.replace(/^#/, ""));
    const t = params.get("token");
    if (t) {
      history.replaceState(null, "", location.pathname + location.search);
      return t.trim();
    }
    return null;
  }

  function query() {
    const q = new URLSearchParams();
    for (const name of ["from", "to", "granularity"]) {
      const v = $(name).value;
      if (v) q.set(name, v);
    }
    return "/v1/reports/equity?" + q.toString();
  }

  async function call(accept) {
    const res = await fetch(query(), {
      headers: { Authorization: "Bearer " + token, Accept: accept },
      cache: "no-store",
      referrerPolicy: "no-referrer"
    });
    if (!res.ok) {
      let detail = res.status + " " + res.statusText;
      try {
        const p = await res.json();
        detail = p.detail || p.title || detail;
        if (p.errors) detail += ": " + p.errors.map((e) => e.field + " " + e.message).join("; ");
      } catch (_) { /* not a problem document */ }
      throw new Error(detail);
    }
    return res;
  }

  async function load() {
    if (!token) {
      status("Give a token with the scope reports:read to see the report.");
      return;
    }
    status("Loading…");
    document.body.dataset.state = "loading";
    try {
      report = await (await call("application/json")).json();
    } catch (e) {
      document.body.dataset.state = "error";
      status("The report could not be loaded: " + e.message, true);
      return;
    }
    $("from").value = report.from;
    $("to").value = report.to;
    $("granularity").value = report.granularity;
    render(report);
    status("Showing " + report.periods.length + " " + report.granularity + "s, " +
      report.from + " to " + report.to + ".");
    document.body.dataset.state = "ready";
  }

  // ---- values ----

  const isNum = (v) => typeof v === "number";
  const shownText = (v) => (v === null || v === undefined ? "withheld" : String(v));

  function groupAt(groups, fig) {
    if (fig.pick) return fig.pick(groups);
    return fig.path.reduce((o, k) => o[k], groups);
  }

  function format(v, kind) {
    if (v === null || v === undefined) return "withheld";
    if (kind === "share" && isNum(v)) return Math.round(v * 100) + "%";
    return String(v);
  }

  function periodLabel(start, granularity) {
    const d = new Date(start + "T00:00:00Z");
    const month = d.toLocaleString("en-GB", { month: "short", timeZone: "UTC" });
    return granularity === "month"
      ? month + " " + String(d.getUTCFullYear()).slice(2)
      : d.getUTCDate() + " " + month;
  }

  // ---- summary ----

  function render(r) {
    $("summary-section").hidden = false;
    $("range-line").textContent = "From " + r.from + " to " + r.to + " by " + r.granularity +
      "; counts from 1 to " + (r.suppression_threshold - 1) + " are shown as \u201c<" +
      r.suppression_threshold + "\u201d. Report made " + r.generated_at.replace("T", " ").slice(0, 16) + " UTC.";
    const t = r.totals;
    const lv = t.plans.by_exclusion_level;
    const all = [lv.none, lv.at_risk, lv.excluded];
    const rate = (part) => (all.every(isNum) && isNum(part) && all.reduce((a, b) => a + b, 0) > 0
      ? Math.round(100 * part / all.reduce((a, b) => a + b, 0)) + "%" : "—");
    const items = [
      ["Current plans digitally excluded", rate(lv.excluded)],
      ["Current plans at risk of exclusion", rate(lv.at_risk)],
      ["Referrals overdue now", shownText(t.referrals.overdue)],
      ["Referrals scheduled in time", format(t.referrals.scheduled_before_due_share, "share")],
      ["Median hours to scheduled", format(t.referrals.hours_to_scheduled.p50)],
      ["Plan reviews overdue", shownText(t.plans.review_overdue)]
    ];
    const dl = $("summary");
    dl.replaceChildren();
    for (const [k, v] of items) {
      const div = document.createElement("div");
      const dt = document.createElement("dt");
      const dd = document.createElement("dd");
      dt.textContent = k;
      dd.textContent = v === "withheld" ? "withheld" : v;
      div.append(dt, dd);
      dl.append(div);
    }
    const figs = $("figures");
    figs.replaceChildren();
    for (const fig of FIGURES) figs.append(figure(fig, r));
  }

  // ---- figures ----

  function figure(fig, r) {
    const keys = Object.keys(groupAt(r.totals, fig));
    const rows = r.periods.map((p) => ({ label: periodLabel(p.start, r.granularity), start: p.start,
      values: keys.map((k) => groupAt(p, fig)[k]) }));
    const total = keys.map((k) => groupAt(r.totals, fig)[k]);
    const el = document.createElement("figure");
    el.id = fig.id;
    const h = document.createElement("h3");
    h.id = fig.id + "-title";
    h.textContent = fig.title;
    const note = document.createElement("p");
    note.className = "note";
    note.textContent = fig.note;
    el.append(h, note, legend(keys, fig.kind));
    const svg = fig.kind === "share" || fig.kind === "line"
      ? lineChart(rows, keys, fig.kind, r.suppression_threshold)
      : barChart(rows, keys, r.suppression_threshold);
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-labelledby", fig.id + "-title");
    svg.setAttribute("aria-describedby", fig.id + "-table-caption");
    el.append(svg);
    el.dataset.marks = String(svg.querySelectorAll(".mark").length);
    const details = document.createElement("details");
    const summary = document.createElement("summary");
    summary.textContent = "Table of “" + fig.title + "”";
    details.append(summary, table(fig, keys, rows, total));
    el.append(details);
    const actions = document.createElement("div");
    actions.className = "figure-actions";
    const button = document.createElement("button");
    button.type = "button";
    button.className = "secondary";
    button.textContent = "Download table (CSV)";
    button.setAttribute("aria-label", "Download the table “" + fig.title + "” as CSV");
    button.addEventListener("click", () => downloadTable(fig, keys, rows, total, r));
    actions.append(button);
    el.append(actions);
    return el;
  }

  function legend(keys, kind) {
    const ul = document.createElement("ul");
    ul.className = "legend";
    ul.setAttribute("aria-hidden", "true");
    keys.forEach((k, i) => {
      const li = document.createElement("li");
      const sw = document.createElement("span");
      sw.className = "swatch";
      sw.style.background = COLOURS[i % COLOURS.length];
      li.append(sw, document.createTextNode(LABELS[k] || k));
      ul.append(li);
    });
    if (kind !== "share" && kind !== "line") {
      const li = document.createElement("li");
      const sw = document.createElement("span");
      sw.className = "swatch suppressed";
      li.append(sw, document.createTextNode("fewer than the threshold (height not known)"));
      ul.append(li);
    }
    return ul;
  }

  function table(fig, keys, rows, total) {
    const t = document.createElement("table");
    const cap = document.createElement("caption");
    cap.id = fig.id + "-table-caption";
    cap.className = "help";
    cap.textContent = fig.title + ", by period; the last row is the whole range.";
    const thead = document.createElement("thead");
    const hr = document.createElement("tr");
    for (const name of ["Period"].concat(keys.map((k) => LABELS[k] || k))) {
      const th = document.createElement("th");
      th.scope = "col";
      th.textContent = name;
      hr.append(th);
    }
    thead.append(hr);
    const tbody = document.createElement("tbody");
    const addRow = (label, values, cls) => {
      const tr = document.createElement("tr");
      if (cls) tr.className = cls;
      const th = document.createElement("th");
      th.scope = "row";
      th.textContent = label;
      tr.append(th);
      for (const v of values) {
        const td = document.createElement("td");
        td.textContent = format(v, fig.kind);
        tr.append(td);
      }
      tbody.append(tr);
    };
    for (const row of rows) addRow(row.start, row.values);
    addRow("Whole range", total, "total");
    t.append(cap, thead, tbody);
    return t;
  }

  // ---- charts ----

  function el(name, attrs, parent) {
    const e = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (parent) parent.append(e);
    return e;
  }

  function niceMax(v) {
    if (v <= 5) return 5;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  const W = 640, H = 260, M = { l: 46, r: 10, t: 10, b: 40 };

  function frame(max, ticks, fmt) {
    const svg = el("svg", { viewBox: "0 0 " + W + " " + H, preserveAspectRatio: "xMidYMid meet" });
    const defs = el("defs", {}, svg);
    const pat = el("pattern", { id: "hatch-" + Math.random().toString(36).slice(2), width: 6, height: 6,
      patternUnits: "userSpaceOnUse", patternTransform: "rotate(45)" }, defs);
    el("rect", { width: 6, height: 6, fill: "#fff" }, pat);
    el("line", { x1: 0, y1: 0, x2: 0, y2: 6, stroke: "#4a5360", "stroke-width": 2.5 }, pat);
    const axis = el("g", { class: "axis" }, svg);
    for (let i = 0; i <= ticks; i++) {
      const v = (max * i) / ticks;
      const y = M.t + (H - M.t - M.b) * (1 - i / ticks);
      el("line", { x1: M.l, x2: W - M.r, y1: y, y2: y }, axis);
      const t = el("text", { x: M.l - 6, y: y + 4, "text-anchor": "end" }, axis);
      t.textContent = fmt(v);
    }
    return { svg, axis, hatch: pat.getAttribute("id") };
  }

  function xLabels(axis, rows, x0, step) {
    const every = Math.ceil(rows.length / 14);
    rows.forEach((row, i) => {
      if (i % every) return;
      const t = el("text", { x: x0 + step * i + step / 2, y: H - M.b + 16, "text-anchor": "middle" }, axis);
      t.textContent = row.label;
    });
  }

  function barChart(rows, keys, threshold) {
    let max = threshold - 1;
    for (const r of rows) for (const v of r.values) if (isNum(v)) max = Math.max(max, v);
    max = niceMax(max);
    const { svg, axis, hatch } = frame(max, 5, (v) => String(Math.round(v)));
    const plotH = H - M.t - M.b;
    const step = (W - M.l - M.r) / Math.max(rows.length, 1);
    const bw = Math.max(1, (step * 0.8) / keys.length);
    const y = (v) => M.t + plotH * (1 - v / max);
    rows.forEach((row, i) => {
      row.values.forEach((v, j) => {
        const x = M.l + step * i + step * 0.1 + bw * j;
        const label = row.start + " · " + (LABELS[keys[j]] || keys[j]) + ": " + shownText(v);
        if (isNum(v)) {
          if (v === 0) return;
          const r = el("rect", { class: "mark", x, y: y(v), width: bw, height: plotH - (y(v) - M.t),
            fill: COLOURS[j % COLOURS.length] }, svg);
          el("title", {}, r).textContent = label;
        } else if (typeof v === "string") {
          // Suppressed: somewhere from 1 to threshold − 1; drawn as a hatched box that high.
          const top = y(threshold - 1);
          const r = el("rect", { class: "mark suppressed", x, y: top, width: bw, height: plotH - (top - M.t),
            fill: "url(#" + hatch + ")", stroke: COLOURS[j % COLOURS.length], "stroke-dasharray": "3 2" }, svg);
          el("title", {}, r).textContent = label + " (suppressed)";
        } else {
          const t = el("text", { class: "mark withheld", x: x + bw / 2, y: M.t + plotH - 3,
            "text-anchor": "middle", "font-size": 10, fill: "#4a5360" }, svg);
          t.textContent = "·";
          el("title", {}, t).textContent = label;
        }
      });
    });
    el("line", { x1: M.l, x2: W - M.r, y1: M.t + plotH, y2: M.t + plotH, stroke: "#4a5360" }, axis);
    xLabels(axis, rows, M.l, step);
    return svg;
  }

  function lineChart(rows, keys, kind, threshold) {
    let max = kind === "share" ? 1 : 1;
    if (kind !== "share") for (const r of rows) for (const v of r.values) if (isNum(v)) max = Math.max(max, v);
    if (kind !== "share") max = niceMax(max);
    const { svg, axis } = frame(max, kind === "share" ? 4 : 5,
      kind === "share" ? (v) => Math.round(v * 100) + "%" : (v) => String(Math.round(v)));
    const plotH = H - M.t - M.b;
    const step = (W - M.l - M.r) / Math.max(rows.length, 1);
    const x = (i) => M.l + step * i + step / 2;
    const y = (v) => M.t + plotH * (1 - v / max);
    keys.forEach((k, j) => {
      const colour = COLOURS[j % COLOURS.length];
      let d = "";
      rows.forEach((row, i) => {
        const v = row.values[j];
        if (isNum(v)) {
          d += (d && isNum(rows[i - 1] && rows[i - 1].values[j]) ? " L" : " M") + x(i) + " " + y(v);
          const c = el("circle", { class: "mark", cx: x(i), cy: y(v), r: 3.5, fill: colour }, svg);
          el("title", {}, c).textContent = row.start + " · " + (LABELS[k] || k) + ": " + format(v, kind);
        }
      });
      if (d) el("path", { d: d.trim(), fill: "none", stroke: colour, "stroke-width": 2,
        "stroke-dasharray": j ? "6 3" : "" }, svg);
    });
    el("line", { x1: M.l, x2: W - M.r, y1: M.t + plotH, y2: M.t + plotH, stroke: "#4a5360" }, axis);
    xLabels(axis, rows, M.l, step);
    void threshold;
    return svg;
  }

  // ---- CSV ----

  function csvCell(s) {
    s = String(s);
    return /[",\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  }

  function save(name, text) {
    const blob = new Blob([text], { type: "text/csv;charset=utf-8" });
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = name;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 1000);
  }

  function downloadTable(fig, keys, rows, total, r) {
    const lines = [["period"].concat(keys).map(csvCell).join(",")];
    const cell = (v) => (v === null || v === undefined ? "" : v);
    for (const row of rows) lines.push([row.start].concat(row.values.map(cell)).map(csvCell).join(","));
    lines.push(["total"].concat(total.map(cell)).map(csvCell).join(","));
    save(fig.id + "-" + r.from + "-" + r.to + "-" + r.granularity + ".csv", lines.join("\n") + "\n");
  }

  async function downloadAll() {
    if (!token) return status("Give a token first.", true);
    try {
      const res = await call("text/csv");
      const name = (res.headers.get("Content-Disposition") || "").match(/filename="([^"]+)"/);
      save(name ? name[1] : "equity-report.csv", await res.text());
      status("Downloaded the whole report as CSV.");
    } catch (e) {
      status("The CSV could not be downloaded: " + e.message, true);
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    token = tokenFromFragment();
    $("token-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const v = $("token").value.trim();
      $("token").value = "";
      if (v) { token = v; load(); }
    });
    $("period-form").addEventListener("submit", (e) => { e.preventDefault(); load(); });
    $("download-all").addEventListener("click", downloadAll);
    window.addEventListener("hashchange", () => {
      const t = tokenFromFragment();
      if (t) { token = t; load(); }
    });
    load();
  });
})();
