/* The Jobs page: last runs refresh every 5 s while the tab is visible. */
"use strict";
(() => {
  const url = document.getElementById("page-script").dataset.url;
  ETL.poll(url, 5, (data) => {
    for (const job of data.jobs) {
      const row = document.querySelector(`tr[data-job="${CSS.escape(job.name)}"]`);
      if (!row) continue;
      const last = job.last_run;
      ETL.text(row.querySelector(".last-started"), last ? ETL.when(last.started_at) : "never");
      const status = row.querySelector(".last-status");
      status.replaceChildren();
      if (last) {
        const badge = document.createElement("span");
        badge.className = `badge ${last.status}`;
        badge.textContent = last.status;
        status.append(badge);
        if (last.error) {
          const error = document.createElement("div");
          error.className = "error";
          error.textContent = last.error;
          status.append(error);
        }
      }
      ETL.text(row.querySelector(".last-rows"), last && last.rows != null ? last.rows : "");
      const recent = row.querySelector(".recent");
      recent.replaceChildren(...job.recent_runs.map((run) => {
        const badge = document.createElement("span");
        badge.className = `badge ${run.status}`;
        badge.title = `${ETL.when(run.started_at)} · ${run.trigger} · ${run.rows} rows`;
        badge.textContent = run.status;
        return badge;
      }).flatMap((b) => [b, document.createTextNode(" ")]));
    }
  });
})();
