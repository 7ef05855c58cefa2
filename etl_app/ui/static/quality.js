/* The Quality page: each record type's days (the chart element's data-series, JSON) as lines of
   the shares from 0 to 1; the score's markers take the colour of the day's level. */
"use strict";
(() => {
  const LEVEL_COLOURS = { excellent: "#2e7d32", good: "#689f38", fair: "#b26a00", poor: "#e65100", unusable: "#c62828" };
  const LINES = [
    ["score", "score", "#1d2430"],
    ["validity", "validity", "#1f5fbf"],
    ["completeness", "completeness (overall)", "#8e44ad"],
    ["uniqueness", "uniqueness", "#00897b"],
    ["integrity", "integrity", "#c0792b"],
  ];

  function traces(series) {
    return LINES.map(([metric, label, colour]) => {
      const trace = {
        type: "scatter", mode: "lines+markers", name: label, x: series.day, y: series[metric],
        line: { color: colour, width: metric === "score" ? 3 : 1.5 }, marker: { size: metric === "score" ? 9 : 5 },
        hovertemplate: `%{x}: %{y:.4f}<extra>${label}</extra>`,
      };
      if (metric === "score") {
        trace.text = series.level;
        trace.marker.color = series.level.map((level) => LEVEL_COLOURS[level] || colour);
        trace.hovertemplate = "%{x}: score %{y:.4f}, %{text}<extra></extra>";
      }
      return trace;
    });
  }

  /* "YYYY-MM-DD HH:MM:SS" (UTC), `hours` after midnight of `day` (negative: before). */
  function around(day, hours) {
    const moment = new Date(Date.parse(`${day}T00:00:00Z`) + hours * 3600 * 1000);
    return moment.toISOString().slice(0, 19).replace("T", " ");
  }

  for (const el of document.querySelectorAll(".quality-chart")) {
    let series;
    try {
      series = JSON.parse(el.dataset.series);
    } catch (err) {
      console.warn("etl_app: unreadable chart data", err);
      continue;
    }
    ETL.chart(el, traces(series), {
      height: 300,
      // the whole range asked, half a day of margin each side, so that a lone day sits in its place
      xaxis: { type: "date", tickformat: "%Y-%m-%d", range: [around(el.dataset.from, -12), around(el.dataset.to, 12)] },
      yaxis: { range: [0, 1.05], title: { text: "share" }, zeroline: false },
    });
  }
})();
