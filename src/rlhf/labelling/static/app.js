// The labeller's page: sign in, rank and score the next task, submit or skip. No build step.
"use strict";

const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("rlhf-token");
let current = null; // the task on screen: {assignment, prompt, answers}

function say(text, kind = "error") {
  const box = $("message");
  box.textContent = text;
  box.className = kind;
  box.hidden = !text;
}

async function api(method, path, body) {
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const detail = typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail);
    const error = new Error(detail || response.statusText);
    error.status = response.status;
    throw error;
  }
  return data;
}

function show(section) {
  for (const id of ["sign-in", "task", "done"]) $(id).hidden = id !== section;
}

function showProgress(p) {
  $("progress").textContent =
    `${p.done} / ${p.assigned} done` + (p.skipped ? `, ${p.skipped} skipped` : "");
}

function renumber() {
  [...$("answers").children].forEach((li, i) => {
    li.querySelector(".rank").textContent = i + 1;
  });
}

function setScore(li, score) {
  say(""); // an earlier message was about the page before this change
  li.dataset.score = score;
  for (const b of li.querySelectorAll(".scores button")) {
    b.setAttribute("aria-checked", String(Number(b.dataset.score) === score));
  }
}

function move(li, step) {
  say("");
  const list = $("answers");
  if (step < 0 && li.previousElementSibling) list.insertBefore(li, li.previousElementSibling);
  if (step > 0 && li.nextElementSibling) list.insertBefore(li.nextElementSibling, li);
  renumber();
  li.focus();
}

let dragged = null;

function answerItem(answer) {
  const li = $("answer-template").content.firstElementChild.cloneNode(true);
  li.dataset.id = answer.id;
  li.querySelector(".text").textContent = answer.text;
  const scores = li.querySelector(".scores");
  for (let s = 1; s <= 7; s++) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = s;
    b.dataset.score = s;
    b.setAttribute("role", "radio");
    b.setAttribute("aria-checked", "false");
    b.addEventListener("click", () => setScore(li, s));
    scores.appendChild(b);
  }
  li.addEventListener("keydown", (e) => {
    if (e.target !== li) return; // keys typed into a control belong to it
    if (e.key === "ArrowUp" || e.key === "ArrowDown") {
      e.preventDefault();
      move(li, e.key === "ArrowUp" ? -1 : 1);
    } else if (/^[1-7]$/.test(e.key)) {
      setScore(li, Number(e.key));
    }
  });
  // Drag and drop: dropping an answer on another puts it at that answer's place.
  li.addEventListener("dragstart", (e) => {
    dragged = li;
    li.classList.add("dragging");
    e.dataTransfer.effectAllowed = "move";
    e.dataTransfer.setData("text/plain", answer.id);
  });
  li.addEventListener("dragend", () => {
    li.classList.remove("dragging");
    dragged = null;
  });
  li.addEventListener("dragover", (e) => e.preventDefault());
  li.addEventListener("drop", (e) => {
    e.preventDefault();
    if (!dragged || dragged === li) return;
    const items = [...$("answers").children];
    const from = items.indexOf(dragged);
    const to = items.indexOf(li);
    $("answers").insertBefore(dragged, from < to ? li.nextElementSibling : li);
    renumber();
  });
  return li;
}

function showTask(task) {
  current = task;
  const prompt = $("prompt");
  prompt.replaceChildren();
  for (const m of task.prompt) {
    const p = document.createElement("p");
    p.className = `message ${m.role}`;
    p.textContent = task.prompt.length > 1 ? `${m.role}: ${m.content}` : m.content;
    prompt.appendChild(p);
  }
  $("answers").replaceChildren(...task.answers.map(answerItem));
  renumber();
  show("task");
}

async function loadNext() {
  const data = await api("GET", "/api/next");
  $("labeller").textContent = data.name;
  $("report-link").hidden = !data.admin;
  $("who").hidden = false;
  showProgress(data.progress);
  if (data.task) showTask(data.task);
  else {
    current = null;
    show("done");
  }
}

async function send(body) {
  const assignment = current.assignment;
  await api("POST", `/api/assignments/${assignment}`, body);
  say(body.skip ? "Skipped." : "Saved.", "ok");
  await loadNext(); // shows the new progress with the next task, in one go
}

$("sign-in").addEventListener("submit", async (e) => {
  e.preventDefault();
  try {
    token = null;
    const data = await api("POST", "/api/session", {
      name: $("name").value, secret: $("secret").value,
    });
    token = data.token;
    sessionStorage.setItem("rlhf-token", token);
    say("");
    await loadNext();
  } catch (error) {
    say(error.message);
  }
});

$("submit").addEventListener("click", async () => {
  const items = [...$("answers").children];
  const unscored = items.filter((li) => !li.dataset.score).map((li) => li.querySelector(".rank").textContent);
  if (unscored.length) {
    say(`Score every answer from 1 to 7 first (answer ${unscored.join(", ")} has no score).`);
    return;
  }
  const flags = {};
  for (const li of items) {
    const checked = [...li.querySelectorAll(".flag input:checked")].map((c) => c.value);
    if (checked.length) flags[li.dataset.id] = checked;
  }
  try {
    await send({
      ranking: items.map((li) => li.dataset.id),
      scores: Object.fromEntries(items.map((li) => [li.dataset.id, Number(li.dataset.score)])),
      flags,
    });
  } catch (error) {
    say(error.message);
  }
});

$("skip").addEventListener("click", async () => {
  try {
    await send({ skip: true });
  } catch (error) {
    say(error.message);
  }
});

$("sign-out").addEventListener("click", () => {
  sessionStorage.removeItem("rlhf-token");
  token = null;
  $("who").hidden = true;
  say("");
  show("sign-in");
});

(async () => {
  if (!token) return show("sign-in");
  try {
    await loadNext();
  } catch (error) {
    sessionStorage.removeItem("rlhf-token");
    token = null;
    show("sign-in");
    say(error.message);
  }
})();
