// The chatd web console: plain DOM code speaking chatd.v1.json to the server that
// served it (protocol/README.md). No build step, no library: see docs/console.md.
"use strict";

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "chatd.console.token";
const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });

const state = {
  token: null,
  ws: null,
  me: null, // my user id
  myName: null,
  nextId: 1,
  waiting: new Map(), // request id -> {resolve, reject}
  convs: new Map(), // conv id -> conversation (with unread, read_seq)
  messages: new Map(), // conv id -> Map(seq -> message)
  outbox: new Map(), // cid -> {conv, text}: sent, not acknowledged yet (sent again after a reconnect)
  current: null,
  reads: new Map(), // conv id -> Map(user -> read seq): the receipts pushed since the page loaded
  typing: new Map(), // conv id -> Map(user -> until, ms)
  typedAt: 0,
  pos: null, // the catch-up position: every message up to it is here
  epoch: null,
  backoff: 500,
  stopped: true,
};

// -- the socket ---------------------------------------------------------------

function setStatus(s, text) {
  const el = $("status");
  el.dataset.state = s;
  el.textContent = text || s;
}

function request(op, d) {
  return new Promise((resolve, reject) => {
    const ws = state.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      reject(Object.assign(new Error("not connected"), { code: "disconnected" }));
      return;
    }
    const id = state.nextId++;
    state.waiting.set(id, { resolve, reject });
    ws.send(JSON.stringify(d === undefined ? { id, op } : { id, op, d }));
  });
}

function connect() {
  state.stopped = false;
  setStatus(state.pos === null ? "connecting" : "reconnecting");
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${scheme}//${location.host}/`, "chatd.v1.json");
  state.ws = ws;
  ws.onopen = () => authenticate().catch((err) => {
    setStatus("error", `sign-in failed: ${err.message}`);
  });
  ws.onmessage = (event) => onFrame(JSON.parse(event.data));
  ws.onclose = (event) => {
    if (state.ws !== ws) return;
    state.ws = null;
    for (const { reject } of state.waiting.values()) {
      reject(Object.assign(new Error("connection lost"), { code: "disconnected" }));
    }
    state.waiting.clear();
    if (state.stopped) return;
    if (event.code >= 4100 && event.code <= 4104) { // the token: refused, expired, revoked
      signOut(`signed out (${event.code} ${event.reason || ""})`.trim());
      return;
    }
    setStatus("reconnecting", `reconnecting (${event.code})`);
    setTimeout(() => { if (!state.stopped) connect(); }, state.backoff);
    state.backoff = Math.min(state.backoff * 2, 8000);
  };
}

async function authenticate() {
  const auth = await request("auth", { token: state.token });
  state.me = auth.user.id;
  state.myName = auth.user.name || auth.user.id;
  $("me").textContent = state.myName === state.me ? state.me : `${state.myName} (${state.me})`;
  state.backoff = 500;
  if (state.pos === null || state.epoch !== auth.epoch) {
    state.pos = auth.pos;
    state.epoch = auth.epoch;
    await loadConvs();
  } else {
    await catchUp();
  }
  setStatus("connected");
  for (const [cid, item] of state.outbox) sendOnce(cid, item); // same cid: a duplicate is answered dup
}

function onFrame(frame) {
  if (frame.id !== undefined) {
    const w = state.waiting.get(frame.id);
    if (!w) return;
    state.waiting.delete(frame.id);
    if (frame.error) w.reject(Object.assign(new Error(frame.error.message), frame.error));
    else w.resolve(frame.d || {});
    return;
  }
  const d = frame.d || {};
  if (frame.push === "msg") onMessage(d);
  else if (frame.push === "read") onRead(d);
  else if (frame.push === "typing") onTyping(d);
  else if (frame.push === "resync") catchUp().catch(() => {});
}

// -- conversations and messages ---------------------------------------------------

async function loadConvs() {
  let after;
  do {
    const page = await request("convs", after === undefined ? { limit: 200 } : { after, limit: 200 });
    for (const c of page.convs) state.convs.set(c.conv, c);
    after = page.next;
  } while (after);
  renderConvs();
}

async function catchUp() {
  for (;;) {
    const page = await request("sync", { since: state.pos, limit: 500 });
    if (page.epoch !== state.epoch) { // another store: start again
      state.epoch = page.epoch;
      state.pos = page.pos;
      state.messages.clear();
      await loadConvs();
      if (state.current) await openConv(state.current);
      return;
    }
    for (const m of page.messages) onMessage(m, false);
    for (const c of page.convs) {
      const known = state.convs.get(c.conv);
      if (known) Object.assign(known, c);
      else await loadConvs();
    }
    state.pos = Math.max(state.pos, page.pos);
    if (!page.more) break;
  }
  renderConvs();
  if (state.current) renderMessages();
}

function onMessage(m, render = true) {
  const seqs = state.messages.get(m.conv);
  if (seqs) seqs.set(m.seq, m); // a conversation not opened yet loads its history when it is
  if (m.pos > state.pos) state.pos = m.pos;
  if (m.from === state.me && m.cid) state.outbox.delete(m.cid);
  const c = state.convs.get(m.conv);
  if (!c) {
    loadConvs().catch(() => {});
    return;
  }
  if (m.seq > (c.last_seq || 0)) {
    c.last_seq = m.seq;
    if (m.from !== state.me && !(m.conv === state.current && document.hasFocus())) c.unread = (c.unread || 0) + 1;
  }
  if (!render) return;
  renderConvs();
  if (m.conv === state.current) {
    renderMessages();
    markRead();
  }
}

function onRead(d) {
  if (!state.reads.has(d.conv)) state.reads.set(d.conv, new Map());
  const reads = state.reads.get(d.conv);
  if (d.user !== state.me && d.seq > (reads.get(d.user) || 0)) {
    reads.set(d.user, d.seq);
    if (d.conv === state.current) renderMessages();
  }
  if (d.user === state.me) {
    const c = state.convs.get(d.conv);
    if (c) { c.read_seq = d.seq; c.unread = Math.max(0, (c.last_seq || 0) - d.seq); renderConvs(); }
  }
}

function onTyping(d) {
  if (d.user === state.me) return;
  if (!state.typing.has(d.conv)) state.typing.set(d.conv, new Map());
  state.typing.get(d.conv).set(d.user, Date.now() + 4000);
  renderTyping();
  setTimeout(renderTyping, 4100);
}

function renderTyping() {
  const now = Date.now();
  const users = [...(state.typing.get(state.current) || new Map())].filter(([, until]) => until > now).map(([u]) => u);
  $("typing").textContent = users.length ? `${users.join(", ")} ${users.length > 1 ? "are" : "is"} typing…` : "";
}

function noteTyping() {
  const now = Date.now();
  if (!state.current || now - state.typedAt < 3000) return; // the server pushes one per 3 s anyway
  state.typedAt = now;
  request("typing", { conv: state.current }).catch(() => {});
}

async function discover(category) {
  const page = await request("circle.list", category ? { category, limit: 50 } : { limit: 50 });
  const list = $("circles");
  list.replaceChildren();
  for (const c of page.convs) {
    if (state.convs.has(c.conv)) continue;
    const li = document.createElement("li");
    const name = document.createElement("span");
    name.textContent = `${c.name} (${c.members})`;
    const join = document.createElement("button");
    join.type = "button";
    join.textContent = "Join";
    join.setAttribute("aria-label", `Join ${c.name}`);
    join.onclick = async () => {
      try {
        const joined = await request("circle.join", { conv: c.conv });
        state.convs.set(joined.conv, { unread: 0, ...joined });
        li.remove();
        await openConv(joined.conv);
      } catch (err) {
        $("conv-error").textContent = `${err.code || "error"}: ${err.message}`;
      }
    };
    li.append(name, join);
    list.append(li);
  }
}

async function leaveCurrent() {
  const conv = state.current;
  try {
    await request("circle.leave", { conv });
  } catch (err) {
    $("conv-error").textContent = `${err.code || "error"}: ${err.message}`;
    return;
  }
  state.convs.delete(conv);
  state.messages.delete(conv);
  state.current = null;
  $("conv-title").textContent = "Pick a conversation";
  $("composer").hidden = true;
  $("leave").hidden = true;
  $("messages").replaceChildren();
  renderConvs();
}

function convName(c) {
  if (c.kind === "dm") return c.peer;
  return c.name || c.conv;
}

function renderConvs() {
  const list = $("convs");
  list.replaceChildren();
  const convs = [...state.convs.values()].sort((a, b) => (b.last_pos || 0) - (a.last_pos || 0) || a.conv.localeCompare(b.conv));
  for (const c of convs) {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.conv = c.conv;
    button.setAttribute("aria-current", String(c.conv === state.current));
    const name = document.createElement("span");
    name.textContent = convName(c);
    button.append(name);
    if (c.unread) {
      const badge = document.createElement("span");
      badge.className = "unread";
      badge.textContent = String(c.unread);
      badge.setAttribute("aria-label", `${c.unread} unread`);
      button.append(badge);
    }
    button.onclick = () => openConv(c.conv);
    li.append(button);
    list.append(li);
  }
}

async function openConv(conv) {
  state.current = conv;
  const c = state.convs.get(conv);
  $("conv-title").textContent = c ? convName(c) : conv;
  $("composer").hidden = false;
  $("leave").hidden = !(c && c.kind === "circle" && c.role !== "owner");
  renderTyping();
  $("conv-error").textContent = "";
  if (!state.messages.has(conv)) {
    state.messages.set(conv, new Map());
    await loadOlder();
  }
  renderConvs();
  renderMessages();
  markRead();
  $("text").focus();
}

async function loadOlder() {
  const conv = state.current;
  const seqs = state.messages.get(conv);
  const first = Math.min(...seqs.keys());
  const d = { conv, limit: 50 };
  if (Number.isFinite(first)) d.before = first;
  const page = await request("history", d);
  for (const m of page.messages) seqs.set(m.seq, m);
  $("older").hidden = !page.more;
  renderMessages();
}

function markRead() {
  const c = state.convs.get(state.current);
  if (!c || !c.last_seq || c.read_seq >= c.last_seq) return;
  request("read", { conv: c.conv, seq: c.last_seq }).then((r) => {
    c.read_seq = r.read_seq;
    c.unread = r.unread;
    renderConvs();
  }).catch(() => {});
}

function messageItem(m, pending) {
  const li = document.createElement("li");
  li.dataset.state = pending ? pending.state : "sent";
  if (m.seq !== undefined) li.dataset.seq = String(m.seq);
  const head = document.createElement("div");
  const author = document.createElement("span");
  author.className = "author";
  author.textContent = (m.author && m.author.name) || m.from;
  head.append(author);
  for (const b of (m.author && m.author.badges) || []) {
    const badge = document.createElement("span");
    badge.className = "badge";
    badge.textContent = b;
    head.append(badge);
  }
  if (m.ts) {
    const t = document.createElement("time");
    t.dateTime = new Date(m.ts).toISOString();
    t.textContent = timeFormat.format(new Date(m.ts));
    head.append(t);
  }
  if (pending) {
    const s = document.createElement("span");
    s.className = "state";
    s.textContent = pending.state === "failed" ? `not sent: ${pending.error}` : "sending…";
    head.append(s);
  } else if (m.from === state.me && m.kind !== "system") {
    const s = document.createElement("span");
    s.className = "state";
    s.textContent = "sent";
    head.append(s);
    const readers = [...(state.reads.get(m.conv) || new Map())].filter(([, seq]) => seq >= m.seq).map(([u]) => u);
    if (readers.length) {
      const r = document.createElement("span");
      r.className = "receipt";
      r.textContent = `read by ${readers.sort().join(", ")}`;
      head.append(r);
    }
  }
  const body = document.createElement("p");
  body.className = "msg-text";
  if (m.kind === "system") {
    body.classList.add("system");
    body.textContent = describeEvent(m.event || {});
  } else {
    body.textContent = m.recalled ? "(recalled)" : m.text;
  }
  li.append(head, body);
  return li;
}

function describeEvent(e) {
  switch (e.type) {
    case "created": return `created “${e.name}”`;
    case "join": return `${e.user} joined`;
    case "leave": return `${e.user} left`;
    case "recall": return `recalled message ${e.seq}`;
    default: return e.type || "event";
  }
}

function renderMessages() {
  const list = $("messages");
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  const seqs = state.messages.get(state.current) || new Map();
  const items = [...seqs.values()].sort((a, b) => a.seq - b.seq).map((m) => messageItem(m));
  const stored = new Set([...seqs.values()].map((m) => m.cid).filter(Boolean));
  for (const [cid, item] of state.outbox) {
    if (item.conv === state.current && !stored.has(cid)) {
      items.push(messageItem({ from: state.me, author: { name: state.myName }, text: item.text }, item));
    }
  }
  list.replaceChildren(...items);
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function sendOnce(cid, item) {
  item.state = "pending";
  request("send", { conv: item.conv, cid, text: item.text }).then((ack) => {
    state.outbox.delete(cid);
    const seqs = state.messages.get(item.conv);
    if (seqs && !seqs.has(ack.seq)) {
      seqs.set(ack.seq, { conv: item.conv, seq: ack.seq, pos: ack.pos, ts: ack.ts, from: state.me,
        author: { name: state.myName }, kind: "text", text: item.text, cid });
    }
    if (item.conv === state.current) renderMessages();
  }).catch((err) => {
    if (err.code === "disconnected" || err.temporary) return; // sent again after the reconnect
    item.state = "failed";
    item.error = err.code || err.message;
    if (item.conv === state.current) renderMessages();
  });
  if (item.conv === state.current) renderMessages();
}

// -- sign-in ---------------------------------------------------------------------

function signIn(token) {
  state.token = token;
  sessionStorage.setItem(TOKEN_KEY, token);
  $("signin").hidden = true;
  $("app").hidden = false;
  $("signout").hidden = false;
  connect();
}

function signOut(why) {
  state.stopped = true;
  if (state.ws) state.ws.close(1000, "signed out");
  sessionStorage.removeItem(TOKEN_KEY);
  Object.assign(state, { token: null, me: null, current: null, pos: null, epoch: null });
  state.convs.clear();
  state.messages.clear();
  state.outbox.clear();
  $("me").textContent = "";
  $("signin").hidden = false;
  $("app").hidden = true;
  $("signout").hidden = true;
  $("signin-error").textContent = why || "";
  setStatus("signed-out", "signed out");
}

async function devSignIn(event) {
  event.preventDefault();
  const q = new URLSearchParams({ user: $("dev-user").value, type: $("dev-type").value });
  if ($("dev-name").value) q.set("name", $("dev-name").value);
  const r = await fetch(`dev-token?${q}`);
  const body = await r.json().catch(() => ({}));
  if (!r.ok) { $("signin-error").textContent = body.error || `error ${r.status}`; return; }
  signIn(body.token);
}

function start() {
  $("token-form").onsubmit = (event) => { event.preventDefault(); signIn($("token").value.trim()); };
  $("dev-form").onsubmit = (event) => devSignIn(event).catch((err) => { $("signin-error").textContent = err.message; });
  $("signout").onclick = () => signOut();
  $("older").onclick = () => loadOlder().catch(() => {});
  $("messages").onscroll = () => { if ($("messages").scrollTop === 0 && !$("older").hidden) loadOlder().catch(() => {}); };
  $("dm-form").onsubmit = async (event) => {
    event.preventDefault();
    try {
      const c = await request("dm.open", { user: $("dm-user").value.trim() });
      state.convs.set(c.conv, { ...state.convs.get(c.conv), ...c });
      $("dm-user").value = "";
      await openConv(c.conv);
    } catch (err) {
      $("conv-error").textContent = `${err.code || "error"}: ${err.message}`;
    }
  };
  $("composer").onsubmit = (event) => {
    event.preventDefault();
    const text = $("text").value;
    if (!text.trim() || !state.current) return;
    $("text").value = "";
    const cid = crypto.randomUUID();
    const item = { conv: state.current, text, state: "pending" };
    state.outbox.set(cid, item);
    sendOnce(cid, item);
  };
  $("text").oninput = noteTyping;
  $("leave").onclick = () => leaveCurrent();
  $("discover-form").onsubmit = (event) => {
    event.preventDefault();
    discover($("category").value).catch((err) => { $("conv-error").textContent = `${err.code || "error"}: ${err.message}`; });
  };
  $("text").onkeydown = (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) { event.preventDefault(); $("composer").requestSubmit(); }
  };
  // a development server signs tokens for anyone (loopback only)
  fetch("dev-token?probe").then((r) => { $("dev-form").hidden = r.status === 404; }).catch(() => {});
  const fragment = new URLSearchParams(location.hash.slice(1));
  const token = fragment.get("token") || sessionStorage.getItem(TOKEN_KEY);
  if (fragment.has("token")) history.replaceState(null, "", location.pathname); // out of the address bar
  if (token) signIn(token);
}

start();
