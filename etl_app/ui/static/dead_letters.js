/* The Dead letters page: each group's arrivals as a small Plotly bar chart (the same numbers are
   in its table), and its numbers refreshed every few seconds while the tab is visible. */
"use strict";
(() => {
  const script = document.getElementById("page-script");
  const seconds = Number(script.dataset.seconds) || 5;

  function draw(section, hours, counts) {
    const el = section.querySelector(".chart");
    if (!el) return;
    el.dataset.counts = JSON.stringify(counts);
    ETL.chart(el, [{
      type: "bar", x: hours, y: counts, marker: { color: "#c62828" },
      hovertemplate: "%{x} UTC: %{y} dead letters<extra></extra>",
    }], {
      height: 150, margin: { t: 6, r: 6, b: 30, l: 34 }, showlegend: false,
      xaxis: { type: "category", nticks: 6, fixedrange: true }, yaxis: { rangemode: "tozero", fixedrange: true },
    });
  }

  function fillTable(section, counts) {
    section.querySelectorAll("table.arrivals tbody tr").forEach((row, i) => {
      ETL.text(row.querySelector("td"), counts[i]);
    });
  }

  const sections = Array.from(document.querySelectorAll("section.dl-group[data-group]"));
  for (const section of sections) {
    const chart = section.querySelector(".chart");
    draw(section, JSON.parse(chart.dataset.hours), JSON.parse(chart.dataset.counts));
  }
  if (!sections.length) return;

  const url = () => {
    const query = new URL(script.dataset.url, window.location.href);
    for (const section of sections) query.searchParams.append("group", section.dataset.group);
    return query.pathname + query.search;
  };
  ETL.poll(url, seconds, (data) => {
    const now = new Map(data.groups.map((g) => [g.id, g]));
    for (const section of sections) {
      const g = now.get(section.dataset.group);
      if (!g) {  // none left under these filters (replayed or discarded meanwhile)
        ETL.text(section.querySelector('[data-field="count"]'), "0");
        section.classList.add("settled");
        continue;
      }
      section.classList.remove("settled");
      ETL.text(section.querySelector('[data-field="count"]'), ETL.number(g.count));
      ETL.text(section.querySelector('[data-field="first_seen"]'), ETL.when(g.first_seen));
      ETL.text(section.querySelector('[data-field="last_seen"]'), ETL.when(g.last_seen));
      const counts = g.arrivals.counts;
      ETL.text(section.querySelector('[data-field="last_day"]'), ETL.number(counts.reduce((a, b) => a + b, 0)));
      const hours = counts.map((_, i) => {
        const d = new Date(new Date(g.arrivals.from).getTime() + i * 3600 * 1000);
        return `${String(d.getUTCHours()).padStart(2, "0")}:00`;
      });
      section.querySelectorAll("table.arrivals tbody th").forEach((th, i) => ETL.text(th, hours[i]));
      fillTable(section, counts);
      if (section.querySelector(".chart").dataset.counts !== JSON.stringify(counts)) draw(section, hours, counts);
    }
  });
})();
