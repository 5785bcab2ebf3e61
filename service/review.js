"use strict";
const state = { token: sessionStorage.getItem("teaming-token") || "", task: null, classes: [], done: 0 };
const $ = (id) => document.getElementById(id);
const keys = "1234567890qwertyio";  // n, u and s answer "none of these", "can't tell" and skip

async function api(path, body) {
  const res = await fetch("/v1" + path, {
    method: body === undefined ? "GET" : "POST",
    headers: { "Authorization": "Bearer " + state.token, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!res.ok) {
    let detail = res.statusText;
    try { detail = (await res.json()).detail || detail; } catch (e) {}
    throw new Error(res.status + ": " + detail);
  }
  return res;
}

function say(text, error) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

function showProgress(stats) {
  const others = Math.max(stats.queue_open - (stats.waiting_for_you || 0), 0);
  $("progress").textContent = `You answered ${state.done} this session · ${stats.waiting_for_you} waiting for you` +
    (others ? ` (${others} more wait for other reviewers)` : "") +
    ` · ${stats.reviews_done} answer${stats.reviews_done === 1 ? "" : "s"} in all`;
}

function drawClasses() {
  const box = $("classes");
  box.innerHTML = "";
  state.classes.forEach((name, i) => {
    const b = document.createElement("button");
    b.type = "button";
    b.dataset.label = name;
    b.innerHTML = `<kbd>${keys[i] || ""}</kbd>${name}`;
    b.addEventListener("click", () => submit(name));
    box.appendChild(b);
  });
}

async function next() {
  try {
    const data = await (await api("/queue/claim", {})).json();
    showProgress(data.stats);
    if (!data.task) {
      state.task = null;
      $("item").hidden = true;
      $("image").removeAttribute("src");
      say("Nothing is waiting for you. Checking again in a few seconds.");
      setTimeout(next, 3000);
      return;
    }
    $("item").hidden = false;
    if (state.classes.length === 0) { state.classes = data.classes; drawClasses(); }
    state.task = data.task;
    const blob = await (await api(`/queue/tasks/${data.task.task_id}/image`)).blob();
    $("image").src = URL.createObjectURL(blob);
    $("image").dataset.taskId = data.task.task_id;
    say(`Task ${data.task.task_id}`);  // not the caller's item id, which may give the answer away
  } catch (err) {
    say(err.message, true);
    if (err.message.startsWith("401") || err.message.startsWith("403")) { $("work").hidden = true; $("login").hidden = false; }
  }
}

async function submit(name, verdict = "class") {
  if (!state.task) return;
  const task = state.task;
  state.task = null;
  const body = verdict === "class" ? { lease_id: task.lease_id, label: name } : { lease_id: task.lease_id, verdict };
  try {
    await api(`/queue/tasks/${task.task_id}/label`, body);
    state.done += 1;
    const said = { class: name, none: "none of these", unsure: "can't tell" }[verdict];
    $("last").textContent = `Saved ${said} for task ${task.task_id}`;
  } catch (err) { say(err.message, true); }
  next();
}

async function skip() {
  if (!state.task) return;
  const task = state.task;
  state.task = null;
  try {
    await api(`/queue/tasks/${task.task_id}/skip`, { lease_id: task.lease_id });
    $("last").textContent = `Skipped task ${task.task_id}: it goes to someone else first`;
  } catch (err) { say(err.message, true); }
  next();
}

document.addEventListener("keydown", (e) => {
  if ($("work").hidden || e.target.tagName === "INPUT") return;
  if (e.key === "s") { skip(); return; }
  if (e.key === "n") { submit(null, "none"); return; }
  if (e.key === "u") { submit(null, "unsure"); return; }
  const i = keys.indexOf(e.key);
  if (i >= 0 && i < state.classes.length) submit(state.classes[i]);
});
$("skip").addEventListener("click", skip);
$("none").addEventListener("click", () => submit(null, "none"));
$("unsure").addEventListener("click", () => submit(null, "unsure"));
$("login").addEventListener("submit", (e) => {
  e.preventDefault();
  state.token = $("token").value.trim();
  sessionStorage.setItem("teaming-token", state.token);
  $("login").hidden = true;
  $("work").hidden = false;
  next();
});
if (state.token) { $("token").value = state.token; }
