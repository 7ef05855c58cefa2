/* The Overview page: the per-minute chart (and its table), the numbers, backpressure, queues,
   workers and last job runs, read now and every 5 s from /ui/api/overview while the tab is visible. */
"use strict";
(() => {
  const url = document.getElementById("page-script").dataset.url;
  const colours = { persisted: "#2e7d32", rejected: "#9e9e9e", dead: "#c62828" };
  const series = ["persisted", "rejected", "dead"];

  function cell(tag, value, className) {
    const el = document.createElement(tag);
    if (className) el.className = className;
    el.textContent = value == null ? "" : String(value);
    return el;
  }

  function drawChart(minutes) {
    const x = minutes.map((m) => ETL.when(m.minute).slice(11, 16));
    const traces = series.map((name) => ({
      type: "bar", name, x, y: minutes.map((m) => m[name]), marker: { color: colours[name] },
      hovertemplate: `%{x} UTC: %{y} ${name}<extra></extra>`,
    }));
    ETL.chart(document.getElementById("throughput"), traces, {
      barmode: "stack", bargap: 0.15, xaxis: { type: "category", nticks: 12 }, yaxis: { rangemode: "tozero" },
    });
  }

  function fillMinutes(minutes) {
    const body = document.querySelector("#per-minute tbody");
    body.replaceChildren(...minutes.slice().reverse().map((m) => {
      const tr = document.createElement("tr");
      const th = cell("th", ETL.when(m.minute));
      th.scope = "row";
      tr.append(th, ...series.map((name) => cell("td", m[name], "num")));
      return tr;
    }));
  }

  function fillQueues(data) {
    const body = document.querySelector("#queues tbody");
    body.replaceChildren(...data.queues.map((q) => {
      const tr = document.createElement("tr");
      tr.dataset.queue = q.queue;
      const th = cell("th", q.queue);
      th.scope = "row";
      tr.append(th, cell("td", q.messages == null ? "unknown" : ETL.number(q.messages), "num"));
      return tr;
    }));
    const error = document.getElementById("queue-error");
    ETL.text(error, data.queue_error);
    error.hidden = !data.queue_error;
  }

  function fillJobs(jobs) {
    for (const job of jobs) {
      const row = document.querySelector(`#jobs-last tr[data-job="${CSS.escape(job.name)}"]`);
      if (!row) continue;
      const last = job.last_run;
      ETL.text(row.querySelector(".started"), last ? ETL.when(last.started_at) : "never");
      const outcome = row.querySelector(".outcome");
      outcome.replaceChildren();
      if (last) outcome.append(cell("span", last.status, `badge ${last.status}`));
      ETL.text(row.querySelector(".rows"), last && last.rows != null ? last.rows : "");
    }
  }

  function fill(data) {
    const error = document.getElementById("overview-error");
    ETL.text(error, data.error);
    error.hidden = !data.error;
    for (const name of series) ETL.text(document.querySelector(`[data-total="${name}"]`), ETL.number(data.totals[name]));
    const stat = (name) => document.querySelector(`[data-stat="${name}"]`);
    ETL.text(stat("open_dead_letters"), data.open_dead_letters == null ? "—" : ETL.number(data.open_dead_letters));
    ETL.text(stat("unsettled"), data.unsettled == null ? "—" : ETL.number(data.unsettled));
    ETL.text(stat("oldest_unsettled"), data.oldest_unsettled);
    stat("oldest_unsettled").title = data.oldest_unsettled_exact || "";
    ETL.text(stat("waiting_for_parents"), data.waiting_for_parents == null ? "—" : ETL.number(data.waiting_for_parents));
    ETL.text(stat("backpressure"), data.backpressure);
    ETL.text(stat("backpressure_bounds"), data.backpressure_bounds);
    const full = data.backlog && data.backlog.full;
    ETL.text(stat("backlog_message"), full ? data.backlog.message : "");
    document.getElementById("backlog-full").hidden = !full;
    const workers = data.workers;
    ETL.text(stat("workers"), workers.names == null ? (workers.error ? "unknown" : "asking…") : workers.names.length);
    ETL.text(stat("worker_names"), workers.names ? workers.names.join(", ") : (workers.error || ""));
    drawChart(data.minutes);
    fillMinutes(data.minutes);
    fillQueues(data);
    fillJobs(data.jobs);
  }

  ETL.fetchJson(url).then(fill).catch((err) => console.warn("etl_app: overview not read", err));
  ETL.poll(url, 5, fill);
})();
