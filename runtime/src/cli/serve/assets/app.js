// The dashboard's one script, embedded in the binary and loaded from this
// server only (the Content-Security-Policy allows no other).

// A form with data-confirm asks first.
document.addEventListener("submit", (event) => {
  const message = event.target.dataset.confirm;
  if (message && !window.confirm(message)) {
    event.preventDefault();
  }
});

// The queues table keeps its counts live from the API.
const live = document.querySelector("table[data-live-queues]");
if (live) {
  const refresh = async () => {
    const answer = await fetch("/v1/queues", { credentials: "same-origin" });
    if (!answer.ok) return;
    const { queues } = await answer.json();
    for (const queue of queues) {
      const row = live.querySelector(`tr[data-queue="${CSS.escape(queue.queue)}"]`);
      if (!row) continue;
      for (const cell of row.querySelectorAll("[data-count]")) {
        cell.textContent = String(queue[cell.dataset.count]);
      }
      const paused = row.querySelector("[data-paused]");
      if (paused) paused.textContent = queue.paused ? "paused" : "";
    }
  };
  setInterval(() => refresh().catch(() => {}), 2000);
}

// The chart is redrawn by the server; fetch it anew every 10 s.
const chart = document.getElementById("chart");
if (chart) {
  setInterval(() => {
    chart.src = `/ui/throughput.svg?at=${Date.now()}`;
  }, 10000);
}
