"use strict";
const state = {
  token: sessionStorage.getItem("teaming-token") || "", task: null, classes: [], keys: [], done: 0,
  url: null,         // the image of the task in hand
  last: null,        // the answer just given, while it may be corrected: {answerId, task, url, until}
  correcting: null,  // that answer, while the reviewer chooses again
};
const $ = (id) => document.getElementById(id);
const RESERVED = "nusz";  // n, u and s answer "none of these", "can't tell" and skip; z undoes the last answer

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

async function api(path, body, method) {
  const res = await fetch("/v1" + path, {
    method: method || (body === undefined ? "GET" : "POST"),
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
  if (state.correcting) { setTimeout(next, 1000); return; }  // the item being corrected stays on screen
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
    state.url = URL.createObjectURL(blob);
    show(data.task, state.url);
    say(`Task ${data.task.task_id}`);  // not the caller's item id, which may give the answer away
  } catch (err) {
    say(err.message, true);
    if (err.message.startsWith("401") || err.message.startsWith("403")) { $("work").hidden = true; $("login").hidden = false; }
  }
}

// A deferred item's task may come with the policy's prediction set (the service decides who sees one): lenient
// highlights its classes, strict offers only them (and "none of these"). Audits and most tasks are blind.
const HINT = {
  lenient: "Highlighted: the classes the answer is most likely among. Look at the image: it may be another.",
  strict: "Choose among these classes, or None of these if it is none of them.",
};

function showView(task) {
  const set = task.prediction_set || [];
  for (const b of $("classes").children) {
    const inSet = set.includes(b.dataset.label);
    b.classList.toggle("in-set", task.view === "lenient" && inSet);
    b.hidden = task.view === "strict" && !inSet;
  }
  $("sethint").textContent = HINT[task.view] || "";
  $("sethint").hidden = !HINT[task.view];
}

function show(task, url) {
  $("item").hidden = false;
  showView(task);
  $("image").onload = () => $("image").classList.toggle("small", $("image").naturalWidth < 128);
  $("image").src = url;
  $("image").dataset.taskId = task.task_id;
}

const SAID = { none: "none of these", unsure: "can't tell" };
const answerBody = (lease, name, verdict) =>
  verdict === "class" ? { lease_id: lease, label: name } : { lease_id: lease, verdict };

async function submit(name, verdict = "class") {
  if (state.correcting) return correct(name, verdict);
  if (!state.task) return;
  const task = state.task;
  state.task = null;
  try {
    const body = answerBody(task.lease_id, name, verdict);
    const saved = await (await api(`/queue/tasks/${task.task_id}/label`, body)).json();
    state.done += 1;
    $("last").textContent = `Saved ${SAID[verdict] || name} for task ${task.task_id}`;
    offerUndo(saved, task);
  } catch (err) { say(err.message, true); }
  next();
}

// A misclick is not final: while the service takes corrections, z (or the button) shows that item again, and the
// next answer replaces the one given; then the page returns to the item in hand.
function offerUndo(saved, task) {
  if (!saved.correctable_until) { state.last = null; $("undo").hidden = true; return; }
  const last = { answerId: saved.answer_id, task, url: state.url, until: saved.correctable_until * 1000 };
  state.last = last;
  $("undo").hidden = false;
  setTimeout(() => { if (state.last === last) { state.last = null; $("undo").hidden = true; } }, last.until - Date.now());
}

function undo() {
  const last = state.last;
  if (!last || state.correcting) return;
  state.last = null;
  $("undo").hidden = true;
  if (Date.now() >= last.until) { say(`Your answer to task ${last.task.task_id} is final now`, true); return; }
  state.correcting = last;
  show(last.task, last.url);
  say(`Correcting your answer to task ${last.task.task_id}: choose again (s keeps it)`);
}

async function correct(name, verdict) {
  const c = state.correcting;
  state.correcting = null;
  try {
    await api(`/answers/${c.answerId}`, answerBody(c.task.lease_id, name, verdict), "PUT");
    $("last").textContent = `Corrected task ${c.task.task_id} to ${SAID[verdict] || name}`;
  } catch (err) { say(err.message, true); }
  backToTask();
}

function backToTask() {
  if (!state.task) { next(); return; }
  show(state.task, state.url);
  say(`Task ${state.task.task_id}`);
}

async function skip() {
  if (state.correcting) { state.correcting = null; $("last").textContent = "Kept your answer"; backToTask(); return; }
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
  if (e.key === "z") { undo(); return; }
  if (e.key === "n") { submit(null, "none"); return; }
  if (e.key === "u") { submit(null, "unsure"); return; }
  const i = state.keys.indexOf(e.key.toLowerCase());
  if (e.key.length === 1 && i >= 0 && !$("classes").children[i].hidden) submit(state.classes[i]);
});
$("skip").addEventListener("click", skip);
$("undo").addEventListener("click", undo);
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
