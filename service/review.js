"use strict";
const state = { token: sessionStorage.getItem("teaming-token") || "", task: null, classes: [], keys: [], done: 0 };
const $ = (id) => document.getElementById(id);
const RESERVED = "nus";  // n, u and s answer "none of these", "can't tell" and skip

// The key that answers each class. A key's label must never read as another class's name: when every class is
// named by one character (digits 0-9, letters), that character is its key; otherwise keys come from a list that
// leaves out every one-character class name, so a reviewer who presses 7 never records a class other than "7".
function keysFor(classes) {
  const single = classes.map((c) => c.trim().toLowerCase());
  if (single.every((c) => c.length === 1 && !RESERVED.includes(c)) && new Set(single).size === classes.length) {
    return single;
  }
  const taken = new Set(single.filter((c) => c.length === 1));
  const pool = [..."1234567890qwertyiopadfghjklzxcvbm"].filter((k) => !taken.has(k) && !RESERVED.includes(k));
  return classes.map((_, i) => pool[i] || "");
}

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
  state.keys = keysFor(state.classes);
  state.classes.forEach((name, i) => {
    const b = document.createElement("button");
    b.type = "button";
    b.dataset.label = name;
    b.dataset.key = state.keys[i];
    if (state.keys[i] && state.keys[i] !== name.trim().toLowerCase()) {  // a key of its own: shown beside the name
      const kbd = document.createElement("kbd");
      kbd.textContent = state.keys[i];
      b.appendChild(kbd);
    }
    b.appendChild(document.createTextNode(name));  // text, never markup: class names come from a model file
    b.addEventListener("click", () => submit(name));
    box.appendChild(b);
  });
  $("keyhelp").textContent = state.keys.every((k, i) => k === state.classes[i].trim().toLowerCase())
    ? "or press its name's key"
    : "or press the key shown on it";
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
    $("image").onload = () => $("image").classList.toggle("small", $("image").naturalWidth < 128);
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
  const i = state.keys.indexOf(e.key.toLowerCase());
  if (e.key.length === 1 && i >= 0) submit(state.classes[i]);
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
