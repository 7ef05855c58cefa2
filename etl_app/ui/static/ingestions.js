/* The Ingestions list: the rows still running poll /ui/api/ingestions every 3 s (only those
   rows), their bars and counts move, and a row that settles shows its status and quality level. */
"use strict";
(() => {
  const script = document.getElementById("page-script");
  const running = () => Array.from(document.querySelectorAll('#ingestions tr[data-status="running"]'));
  if (running().length === 0) return;
  const url = () => {
    const params = new URLSearchParams();
    for (const row of running()) params.append("id", row.dataset.id);
    return `${script.dataset.url}?${params}`;
  };
  const stop = ETL.poll(url, 3, (data) => {
    for (const item of data.ingestions) {
      const row = document.querySelector(`#ingestions tr[data-id="${CSS.escape(item.id)}"]`);
      if (row) ETLIngestion.update(row, item);
    }
    if (running().length === 0) stop();
  });
})();
