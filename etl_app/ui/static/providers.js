/* The Providers page: counters and breaker states refresh every 5 s while the tab is visible. */
"use strict";
(() => {
  const url = document.getElementById("page-script").dataset.url;
  ETL.poll(url, 5, (data) => {
    for (const p of data.providers) {
      const row = document.querySelector(`tr[data-provider="${CSS.escape(p.name)}"]`);
      if (!row) continue;
      ETL.text(row.querySelector(".calls"), ETL.number(p.calls.total));
      ETL.text(row.querySelector(".hits"), p.cache.hit_ratio == null ? "—" : `${(p.cache.hit_ratio * 100).toFixed(1)} %`);
      const errors = Object.entries(p.errors).map(([kind, n]) => `${kind}: ${n}`).join(", ");
      ETL.text(row.querySelector(".errors"), errors || "none");
      ETL.text(row.querySelector(".limited"), p.rate_limited);
      const cell = row.querySelector(".breaker");
      const badge = document.createElement("span");
      badge.className = `badge ${p.breaker.state}`;
      badge.textContent = p.breaker.state;
      cell.replaceChildren(badge);
      if (p.breaker.state === "open") {
        const left = document.createElement("span");
        left.className = "muted";
        left.textContent = ` ${Math.round(p.breaker.open_for_seconds)} s left`;
        cell.append(" ", left);
      }
    }
  });
})();
