/* A dead-letter group's page: its open count refreshed every few seconds while the tab is visible. */
"use strict";
(() => {
  const script = document.getElementById("page-script");
  const seconds = Number(script.dataset.seconds) || 5;
  const group = script.dataset.group;
  ETL.poll(script.dataset.url, seconds, (data) => {
    const found = data.groups.find((g) => g.id === group);
    ETL.text(document.getElementById("open-count"), ETL.number(found ? found.count : 0));
  });
})();
