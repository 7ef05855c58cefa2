/* One ingestion's page: while it runs, its counts and bar poll /ui/api/ingestions/<id> every
   2 s; once it settles the status, quality level, scorecard and top errors appear and the polling
   stops. Also defines ETLIngestion.update, which the list uses for its rows. Text only: every
   value goes in with textContent. */
"use strict";
const ETLIngestion = (() => {
  function badge(text, className) {
    const el = document.createElement("span");
    el.className = `badge ${className}`;
    el.textContent = text;
    return el;
  }

  /* Bar, counts, status and level of one ingestion inside `root` (a table row or the page). */
  function update(root, item) {
    root.dataset.status = item.status;
    for (const segment of item.segments) {
      const bar = root.querySelector(`[data-segment="${segment.name}"]`);
      if (bar) {
        bar.style.width = `${segment.percent}%`;
        bar.title = `${segment.name.replace("_", " ")}: ${segment.count}`;
      }
      ETL.text(root.querySelector(`[data-count="${segment.name}"]`), ETL.number(segment.count));
    }
    const progress = root.querySelector(".progress");
    if (progress) {
      progress.setAttribute("aria-label",
        item.segments.map((s) => `${s.name.replace("_", " ")} ${s.count}`).join(", "));
    }
    const status = root.querySelector(".status");
    if (status) status.replaceChildren(badge(item.status, item.status));
    const level = root.querySelector(".level");
    if (level && item.level) level.replaceChildren(badge(item.level, `level-${item.level}`));
  }

  function cell(tag, value, className) {
    const el = document.createElement(tag);
    if (className) el.className = className;
    el.textContent = value == null ? "" : String(value);
    return el;
  }

  function scorecard(table, rows) {
    const body = table.querySelector("tbody");
    body.replaceChildren(...rows.map((r) => {
      const tr = document.createElement("tr");
      const th = cell("th", r.metric);
      th.scope = "row";
      const level = document.createElement("td");
      if (r.level) level.append(badge(r.level, `level-${r.level}`));
      const value = cell("td", r.value, "num");
      if (r.title) value.title = r.title;
      tr.append(th, value, level);
      return tr;
    }));
  }

  function topErrors(table, errors) {
    const body = table.querySelector("tbody");
    body.replaceChildren(...errors.map((e) => {
      const tr = document.createElement("tr");
      tr.append(cell("td", e.field), cell("td", e.message), cell("td", ETL.number(e.count), "num"));
      return tr;
    }));
  }

  const script = document.getElementById("page-script");
  if (script && script.dataset.page === "ingestion" && script.dataset.running === "true") {
    const page = document.getElementById("ingestion");
    const stop = ETL.poll(script.dataset.url, 2, (item) => {
      update(page, item);
      if (item.upload) {
        ETL.text(page.querySelector("[data-upload=rows_read]"), ETL.number(item.upload.rows_read));
        ETL.text(page.querySelector("[data-upload=status]"), item.upload.status);
        const meter = page.querySelector("progress[data-upload=progress]");
        if (meter) meter.value = item.upload.progress;
      }
      if (item.status !== "running") {
        stop();
        ETL.text(page.querySelector("[data-finished]"), ETL.when(item.finished_at));
        const card = document.getElementById("scorecard");
        if (card) {
          scorecard(card, item.scorecard);
          card.hidden = false;
          const waiting = document.getElementById("scorecard-waiting");
          if (waiting) waiting.hidden = true;
        }
        const errors = document.getElementById("top-errors");
        if (errors) {
          topErrors(errors, item.top_errors);
          errors.hidden = item.top_errors.length === 0;
        }
      }
    });
  }

  return { update };
})();
