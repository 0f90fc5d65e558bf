// The admin's quality report: agreement overall and per labeller (GET /api/report).
"use strict";

const $ = (id) => document.getElementById(id);
let report = null;

function pct(m) {
  return m.rate === null ? "–" : `${(100 * m.rate).toFixed(1)}% (${m.agreed}/${m.pairs})`;
}

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
}

function render() {
  const alpha = report.krippendorff_alpha;
  $("summary").replaceChildren();
  for (const line of [
    `${report.tasks} tasks (${report.gold_tasks} gold), ${report.rankings} rankings, ` +
      `${report.tasks_ranked_by_two_or_more} tasks ranked by two or more labellers.`,
    `Pair agreement between labellers: ${pct(report.pair_agreement)}.`,
    `Krippendorff's alpha (ordinal, over rankings): ${alpha === null ? "–" : alpha.toFixed(3)}.`,
  ]) {
    const p = document.createElement("p");
    p.textContent = line;
    $("summary").appendChild(p);
  }
  const bar = Number($("threshold").value);
  const body = document.querySelector("#labellers tbody");
  body.replaceChildren();
  for (const l of report.labellers) {
    const row = document.createElement("tr");
    const rates = [l.agreement_with_others.rate, l.agreement_with_gold.rate];
    if (rates.some((r) => r !== null && r < bar)) row.className = "below";
    cell(row, l.name);
    cell(row, `${l.done} / ${l.assigned}`, "num");
    cell(row, l.skipped, "num");
    cell(row, pct(l.agreement_with_others));
    cell(row, pct(l.agreement_with_gold));
    cell(row, Object.entries(l.flags).map(([k, v]) => `${k} ${v}`).join(", ") || "–");
    body.appendChild(row);
  }
}

(async () => {
  const token = sessionStorage.getItem("rlhf-token");
  const response = await fetch("/api/report", { headers: { Authorization: `Bearer ${token}` } });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    $("message").textContent = `${data.detail || response.statusText} (sign in as an admin on the labelling page)`;
    $("message").className = "error";
    $("message").hidden = false;
    return;
  }
  report = data;
  render();
  $("threshold").addEventListener("input", render);
})();
