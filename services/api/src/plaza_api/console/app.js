// The console: sign in, a queue (or a worker's assignments), and a request's page with the
// actions the API says the user may take. Routes live in the URL's hash (#/queue/06?status=new,
// #/request/12), never the credential. Everything a citizen wrote goes in as text (dom.js).

import { ApiError, call, credential, onUnauthorized, query, stream } from "./api.js";
import { announce, append, h, replace, safeUrl } from "./dom.js";
import { LANGUAGES, chooseLanguage, has, language, locale, plural, setLanguage, t, translatePage } from "./i18n.js";

const PAGE = 50;
const REFRESH_SECONDS = 30;
const STATUSES = [
  "new", "acknowledged", "assigned", "in_progress", "transferred", "reopened",
  "resolved", "closed", "duplicate", "not_responsible",
];
const FILTERS = ["status", "service_code", "urgency", "overdue", "escalated", "assigned_worker", "sort"];
const WAITING = new Set(["new", "transferred", "reopened"]); // nobody has acknowledged it yet
const OPEN = new Set([...WAITING, "acknowledged", "assigned", "in_progress"]);
// What each action asks for (README "The life of a request"); the API checks it and says why not.
// Each one's label is i18n.js's action.<name>, each field's field.<name>.
const ACTION_FIELDS = {
  acknowledge: [],
  assign: ["worker"],
  start: [],
  resolve: ["note", "photo_url"],
  close: [],
  reopen: ["note"],
  transfer: ["note", "district_code", "agency"],
  mark_duplicate: ["duplicate_of"],
  not_responsible: ["note"],
};

const state = {
  me: null,
  city: { name: "", time_zone: "Europe/Madrid", queues: [], districts: {}, barris: {} },
  services: {},
  queue: null, // {code, filters, items, next, loadedAt}
  timer: null,
  live: null, // the queue's live updates: {code, controller, lastId, open, failures, retry, timer}
  requestId: null,
  shown: null, // the request drawn on its page (its version: whether someone changed it since)
  back: null, // where a request's "back" link goes: the map it was opened from, else the queue
  mapShown: null, // the queue's map drawn: {code, kept (its filters), map, name, ids, summary}
};
let uid = 0;
const nextId = (stem) => `${stem}-${++uid}`;

const main = () => document.getElementById("main");

// --- start, sign in, sign out ---------------------------------------------------------------

onUnauthorized(sessionEnded);

function sessionEnded(error) {
  const wasIn = state.me !== null;
  credential.clear();
  state.me = null;
  showSignIn(wasIn ? t("signin.ended", { detail: error.detail }) : t("signin.notSignedIn", { detail: error.detail }));
}

async function start() {
  document.getElementById("sign-out").addEventListener("click", signOut);
  document.getElementById("language").addEventListener("change", (event) => switchLanguage(event.currentTarget.value));
  // only the console's own routes (#/...): the skip link's #main moves the focus, nothing else
  window.addEventListener("hashchange", () => location.hash.startsWith("#/") && route());
  // a hidden tab holds no stream open (nor polls): back in view, it catches up and goes live
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) stopLive();
    else if (state.me && state.queue && currentView() === "queue") {
      refreshQueue();
      startLive();
    } else if (state.me && state.mapShown && currentView() === "map") {
      refreshMap();
      startMapLive(state.mapShown.code);
    } else if (state.me && state.shown && currentView() === "request") {
      startRequestLive(state.shown);
      if (state.live) checkRequest(state.live);
    }
  });
  // the map's markers keep their size in pixels as the window's changes
  window.addEventListener("resize", () => {
    const map = document.getElementById("map");
    if (map) placeMarkers(map);
  });
  await loadCity();
  useLanguage(chooseLanguage(state.city.council?.language));
  await loadServices();
  if (!credential.get()) {
    showSignIn();
    return;
  }
  try {
    await signedIn();
  } catch (error) {
    if (error.status !== 401) showFatal(error);
  }
}

async function loadCity() {
  try {
    state.city = (await call("city.json", { auth: false })).data;
  } catch (error) {
    // the console still works with codes and UTC-free local times; say what is missing
    console.warn("the city's names could not be read", error);
  }
}

/** The services' names in the console's language (Open311 gives them in ca, es and en). */
async function loadServices() {
  try {
    const { data } = await call(`/open311/v2/services.json${query({ lang: language() })}`, { auth: false });
    state.services = Object.fromEntries(data.map((service) => [service.service_code, service.service_name]));
  } catch (error) {
    console.warn("the services' names could not be read", error);
  }
}

/** Sets the page's language: its static words, the switcher, the locale of dates. */
function useLanguage(code, remember = false) {
  setLanguage(code, remember);
  translatePage();
  const select = document.getElementById("language");
  if (!select.options.length) {
    for (const [value, name] of Object.entries(LANGUAGES)) select.append(h("option", { value, lang: value }, name));
  }
  select.value = code;
}

/** The user's choice in the top bar: remembered, and the page she is on drawn again in it. The
 * focus stays on the switcher (a page drawn anew takes it): from the keyboard, each arrow key
 * changes the language, and a user going through them would otherwise be thrown out at the
 * first one. */
async function switchLanguage(code) {
  const select = document.getElementById("language");
  useLanguage(code, true);
  await loadServices();
  if (state.me) {
    showWho();
    await route();
  } else {
    showSignIn();
  }
  if (select.value === code) select.focus();
  announce(LANGUAGES[code]);
}

function showSignIn(message, kind = "error") {
  stopTimer();
  stopLive();
  document.getElementById("session").hidden = true;
  const error = h("p", { class: kind, role: "alert", id: "sign-in-message" }, message || "");
  const userForm = h(
    "form",
    { method: "post", class: "card stack", "aria-labelledby": "sign-in-title", onsubmit: passwordSignIn },
    h("h1", { id: "sign-in-title", tabindex: "-1" }, t("signin.title")),
    h("p", { class: "muted" }, t("signin.who", { city: state.city.name || t("signin.theCity") })),
    field(t("signin.username"), h("input", { name: "username", autocomplete: "username", required: true, autocapitalize: "none", spellcheck: "false" })),
    field(t("signin.password"), h("input", { name: "password", type: "password", autocomplete: "current-password", required: true })),
    h("button", { type: "submit", class: "primary" }, t("signin.submit")),
    h(
      "details",
      {},
      h("summary", {}, t("signin.useKey")),
      h(
        "div",
        { class: "stack" },
        // Enter in the key's field signs in with the key: it sits in the password form, whose
        // submission would ask for the username instead.
        field(t("signin.key"), h("input", { name: "key", type: "password", autocomplete: "off", spellcheck: "false", onkeydown: keyEnter })),
        h("button", { type: "button", onclick: keySignIn }, t("signin.withKey")),
      ),
    ),
    error,
  );
  describedByErrors(userForm);
  replace(main(), h("section", { class: "sign-in" }, userForm));
  document.title = `${t("signin.title")} · Plaza`;
  userForm.querySelector(message ? "h1" : "input").focus();
}

async function passwordSignIn(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const error = form.querySelector("#sign-in-message");
  error.textContent = "";
  const data = new FormData(form);
  await busy(form, async () => {
    try {
      const { data: token } = await call("/api/v1/auth/token", {
        method: "POST",
        auth: false,
        form: { username: data.get("username"), password: data.get("password") },
      });
      credential.set(token.access_token);
      await signedIn();
    } catch (failure) {
      error.textContent = failure.status === 401 ? t("signin.wrong") : failure.detail || String(failure);
    }
  });
}

function keyEnter(event) {
  if (event.key !== "Enter") return;
  event.preventDefault();
  keySignIn(event);
}

async function keySignIn(event) {
  const form = event.currentTarget.form;
  const error = form.querySelector("#sign-in-message");
  error.textContent = "";
  const key = form.elements.key.value.trim();
  if (!key) {
    error.textContent = t("signin.pasteKey");
    return;
  }
  credential.set(key);
  await busy(form, async () => {
    try {
      await signedIn();
    } catch (failure) {
      // a 401 already brought the sign-in back, saying why
      if (failure.status !== 401) error.textContent = failure.detail || String(failure);
    }
  });
}

async function signedIn() {
  const { data: me } = await call("/api/v1/me");
  if (!["worker", "manager", "city_hall", "admin"].includes(me.role)) {
    credential.clear();
    throw new ApiError(403, {
      detail: t("signin.notStaff", { role: me.role }),
    });
  }
  state.me = me;
  showWho();
  document.getElementById("session").hidden = false;
  document.getElementById("nav-replies").hidden = me.role === "worker"; // /replies is not theirs
  document.getElementById("nav-report").hidden = !readsReport(); // the API's 403 for the others
  announce(t("signin.signedInAs", { name: me.name }));
  route();
}

function showWho() {
  replace(document.getElementById("who"), h("strong", {}, state.me.name), ` · ${roleLabel(state.me)}`);
}

function signOut() {
  stopLive();
  credential.clear();
  state.me = null;
  state.queue = null;
  history.replaceState(null, "", "#/");
  showSignIn(t("signin.signedOut"), "info");
}

function roleLabel(me) {
  if (me.role === "worker") return t("role.worker", { handle: me.worker_handle });
  if (me.role === "manager") return t("role.manager", { queues: me.scopes.map(queueName).join(", ") });
  return me.role === "city_hall" ? t("role.cityHall") : t("role.admin");
}

// --- routes ---------------------------------------------------------------------------------

function currentView() {
  if (location.hash.startsWith("#/request/")) return "request";
  if (location.hash.startsWith("#/map")) return "map";
  if (location.hash.startsWith("#/report")) return "report";
  return location.hash.startsWith("#/replies") ? "replies" : "queue";
}

/** Shows the page the address names; resolves when it is drawn. */
function route() {
  if (!state.me) return Promise.resolve();
  const hash = location.hash.startsWith("#/") ? location.hash : "#/";
  const request = /^#\/request\/(\d+)$/.exec(hash);
  if (request) {
    stopTimer();
    stopLive();
    return showRequest(request[1]);
  }
  if (hash.startsWith("#/replies") && state.me.role !== "worker") {
    stopTimer();
    stopLive();
    return showReplies(new URLSearchParams(hash.split("?")[1] || "").get("state") ?? "failed");
  }
  if (state.me.role === "worker") {
    return showQueue("assignments", {});
  }
  if (hash.startsWith("#/report")) {
    stopTimer();
    stopLive();
    if (readsReport()) return showReport(new URLSearchParams(hash.split("?")[1] || "").get("month"));
    history.replaceState(null, "", "#/"); // not hers: her queue, at its own address
    return showQueue(myQueues()[0]?.code, {});
  }
  const [path, search] = hash.split("?");
  let code = "";
  try {
    code = decodeURIComponent(path.replace(/^#\/(queue|map)\/?/, "").replace(/^#\/?/, ""));
  } catch {
    // a mangled address: the first queue
  }
  const given = new URLSearchParams(search || "");
  const filters = Object.fromEntries(FILTERS.filter((name) => given.get(name)).map((name) => [name, given.get(name)]));
  if (hash.startsWith("#/map")) {
    stopTimer();
    stopLive();
    return showMap(code || myQueues()[0]?.code, filters);
  }
  return showQueue(code || myQueues()[0]?.code, filters);
}

function myQueues() {
  const me = state.me;
  if (me.role === "manager") return me.scopes.map((code) => ({ code, name: queueName(code) }));
  return state.city.queues.map((q) => ({ code: q.code, name: queueName(q.code) }));
}

/** A queue's name: a district's is the city's; triage's, city hall's and the routing table's
 * city-wide queues' (city.json names them in English) are the console's words. */
function queueName(code) {
  if (code === "triage") return t("queue.triage");
  if (code === "city-hall") return t("queue.cityHall");
  if (state.city.districts[code]) return state.city.districts[code];
  return state.city.queues.some((q) => q.code === code) ? t("queue.cityWide", { code }) : code;
}

function serviceName(code) {
  return state.services[code] || code;
}

// --- the queue ------------------------------------------------------------------------------

async function showQueue(code, filters) {
  state.back = null; // back from a request: to this list
  const same = state.queue && state.queue.code === code && sameFilters(state.queue.filters, filters);
  if (!same) state.queue = { code, filters, items: [], next: null, loadedAt: null, selected: new Set(), arrived: new Set() };
  const q = state.queue;
  const title = code === "assignments" ? t("queue.assignments") : t("queue.title", { name: queueName(code) });
  const list = h("ol", { class: "items", id: "queue-items", "aria-live": "off" });
  const more = h("button", { type: "button", id: "load-more", hidden: true, onclick: loadMore }, t("queue.loadMore"));
  const meta = h("p", { class: "muted", id: "queue-meta" });
  const error = h("p", { class: "error", role: "alert", id: "queue-error" });
  const refresh = h("button", { type: "button", id: "refresh", onclick: () => refreshQueue(true) }, t("queue.refresh"));
  replace(
    main(),
    h(
      "section",
      { "aria-labelledby": "queue-title", class: "queue" },
      h(
        "div",
        { class: "heading" },
        h("h1", { id: "queue-title", tabindex: "-1" }, title),
        h("p", { class: "views" }, code === "assignments" ? null : h("a", { class: "button", id: "to-map", href: `#/map/${encodeURIComponent(code)}${query(filters)}` }, t("map.show")), refresh),
      ),
      code === "assignments" ? null : filterBox(code, filters),
      meta,
      code === "assignments" ? null : bulkForm(),
      error,
      list,
      more,
    ),
  );
  document.title = `${title} · Plaza`;
  keepFocus(document.getElementById("queue-title"));
  if (same && q.items.length) {
    renderItems();
    refreshQueue();
  } else {
    list.append(h("li", { class: "loading" }, t("queue.loading")));
    await loadPage(false);
  }
  if (state.queue !== q || currentView() !== "queue") return;
  if (!state.live?.open) startTimer(); // polling until the stream is open
  startLive();
}

function sameFilters(a, b) {
  return JSON.stringify(Object.entries(a).sort()) === JSON.stringify(Object.entries(b).sort());
}

/** The filters, folded away on a phone's screen unless some are in force. */
function filterBox(code, filters) {
  const active = Object.values(filters).some(Boolean);
  const wide = window.matchMedia("(min-width: 40rem)").matches;
  return h(
    "details",
    { class: "filter-box", open: active || wide },
    h("summary", {}, active ? t("filters.summaryActive") : t("filters.summary")),
    filterForm(code, filters),
  );
}

function filterForm(code, filters) {
  const selected = new Set((filters.status || "").split(",").filter(Boolean));
  const queues = myQueues();
  const serviceOptions = Object.entries(state.services).sort((a, b) => a[1].localeCompare(b[1]));
  const choose = (name, label, options, value) =>
    field(
      label,
      h(
        "select",
        { name },
        options.map(([v, text]) => h("option", { value: v, selected: v === (value || "") }, text)),
      ),
    );
  return h(
    "form",
    { class: "filters", method: "post", "aria-label": t("filters.label"), onsubmit: applyFilters },
    choose("queue", t("filters.queue"), queues.map((q) => [q.code, q.name]), code),
    h(
      "fieldset",
      { class: "statuses" },
      h("legend", {}, t("filters.statuses")),
      STATUSES.map((s) =>
        h("label", { class: "check" }, h("input", { type: "checkbox", name: "status", value: s, checked: selected.has(s) }), ` ${statusName(s)}`),
      ),
    ),
    choose("service_code", t("filters.service"), [["", t("filters.anyService")], ...serviceOptions], filters.service_code),
    choose("urgency", t("filters.urgency"), [["", t("filters.any")], ["urgent", capital(t("urgency.urgent"))], ["normal", capital(t("urgency.normal"))]], filters.urgency),
    choose("overdue", t("filters.overdue"), [["", t("filters.any")], ["true", t("filters.overdueOnly")], ["false", t("filters.notOverdue")]], filters.overdue),
    choose("escalated", t("filters.escalated"), [["", t("filters.any")], ["true", t("filters.escalatedOnly")], ["false", t("filters.notEscalated")]], filters.escalated),
    field(t("filters.worker"), h("input", { name: "assigned_worker", value: filters.assigned_worker || "", placeholder: "@jordi", autocapitalize: "none", spellcheck: "false" })),
    choose("sort", t("filters.order"), [["", t("filters.earliest")], ["-due", t("filters.latest")]], filters.sort),
    h("div", { class: "actions-row" }, h("button", { type: "submit", class: "primary" }, t("filters.apply"))),
  );
}

function applyFilters(event) {
  event.preventDefault();
  const data = new FormData(event.currentTarget);
  const filters = {
    status: data.getAll("status").join(","),
    service_code: data.get("service_code"),
    urgency: data.get("urgency"),
    overdue: data.get("overdue"),
    escalated: data.get("escalated"),
    assigned_worker: String(data.get("assigned_worker") || "").trim(),
    sort: data.get("sort"),
  };
  // the view she is on, list or map, with the filters
  location.hash = `#/${currentView() === "map" ? "map" : "queue"}/${encodeURIComponent(data.get("queue"))}${query(filters)}`;
}

function queuePath(q, limit, cursor) {
  if (q.code === "assignments") return `/api/v1/assignments${query({ limit: Math.min(limit, 500) })}`;
  return `/api/v1/districts/${encodeURIComponent(q.code)}/queue${query({ ...q.filters, limit, cursor })}`;
}

async function loadPage(append_) {
  const q = state.queue;
  const error = document.getElementById("queue-error");
  try {
    const { data } = await call(queuePath(q, PAGE, append_ ? q.next : undefined));
    if (state.queue !== q) return; // the user moved on meanwhile
    q.items = append_ ? [...q.items, ...data.items] : data.items;
    q.next = data.next_cursor || null;
    q.loadedAt = new Date();
    error.textContent = "";
    renderItems();
  } catch (failure) {
    if (failure.status === 401) return;
    error.textContent = failure.detail;
    if (!q.items.length) replace(document.getElementById("queue-items"));
  }
}

/** The next page, the focus on its first request (where reading goes on, not the list's last
 * one), or back on the button when nothing came. */
async function loadMore(event) {
  const before = state.queue.items.length;
  await busy(event.currentTarget, () => loadPage(true));
  const items = document.querySelectorAll("#queue-items > li > a");
  announce(plural("queue.shown", state.queue.items.length));
  const first = items[before];
  if (first) first.focus();
  else keepFocus(document.getElementById("load-more").hidden ? document.getElementById("queue-title") : document.getElementById("load-more"));
}

/** The queue again, as far as it was read (up to 500), keeping the user's place: the request
 * she is on (focused, else the first one in view) stays where it was on the screen while new
 * ones come in above or below, and new arrivals are said politely rather than the focus moved. */
async function refreshQueue(asked = false, touched = null) {
  const q = state.queue;
  if (!q || currentView() !== "queue" || !document.getElementById("queue-items")) return;
  const limit = Math.min(500, Math.max(PAGE, q.items.length));
  const error = document.getElementById("queue-error");
  try {
    const { data } = await call(queuePath(q, limit));
    if (state.queue !== q || currentView() !== "queue") return;
    // new to the list, and come to the queue: one the stream named (created, merged into,
    // transferred in), or any when the whole queue was read; not one that was further down,
    // beyond the pages read, and came up as another left
    const before = new Set(q.items.map((item) => item.service_request_id));
    const came = (id) => (touched ? touched.has(id) : !q.next);
    const arrivals = q.loadedAt ? data.items.filter((item) => !before.has(item.service_request_id) && came(item.service_request_id)) : [];
    for (const item of arrivals) q.arrived.add(item.service_request_id);
    q.items = data.items;
    q.next = data.next_cursor || null;
    q.loadedAt = new Date();
    error.textContent = "";
    const place = placeInList();
    renderItems();
    place.restore();
    if (arrivals.length) {
      announce(plural("live.arrived", arrivals.length, { ids: arrivals.map((item) => `#${item.service_request_id} ${serviceName(item.service_code)}`).join(", ") }));
    } else if (asked) {
      announce(t("queue.refreshed"));
    }
  } catch (failure) {
    if (failure.status !== 401) error.textContent = failure.detail;
  }
}

/** Where the user is in the queue's list: the focused control (a request's link or its tick
 * box), else the first request in view; `restore()` after the list is drawn again puts that
 * request back at the same height on the screen and the focus back on the same control. */
function placeInList() {
  const active = document.activeElement;
  const focusedItem = active?.closest?.("#queue-items > li[data-id]");
  const control = focusedItem ? (active.matches(".pick") ? ".pick" : "a") : null;
  const anchor =
    focusedItem ||
    [...document.querySelectorAll("#queue-items > li[data-id]")].find((li) => li.getBoundingClientRect().bottom > 0);
  const id = anchor?.dataset.id;
  const top = anchor?.getBoundingClientRect().top;
  return {
    restore() {
      if (!id) return;
      const again = document.querySelector(`#queue-items > li[data-id="${CSS.escape(id)}"]`);
      if (!again) return;
      window.scrollBy(0, again.getBoundingClientRect().top - top);
      if (control && document.activeElement !== again.querySelector(control)) again.querySelector(control)?.focus({ preventScroll: true });
    },
  };
}

function renderItems() {
  const q = state.queue;
  const list = document.getElementById("queue-items");
  if (!list) return;
  if (!q.items.length) {
    replace(list, h("li", { class: "empty" }, q.code === "assignments" ? t("queue.noAssignments") : t("queue.clear")));
  } else {
    patchItems(list, q.items);
  }
  const more = document.getElementById("load-more");
  more.hidden = !q.next;
  countSelected();
  showMeta();
}

/** The list made to show `items`, touching only the requests that came, went or changed: one a
 * screen reader or the keyboard is on stays the same element where nothing about it changed. */
function patchItems(list, items) {
  const ids = items.map((item) => item.service_request_id);
  const shown = new Map([...list.children].filter((li) => li.dataset.id).map((li) => [li.dataset.id, li]));
  const kept = [...shown.keys()].filter((id) => ids.includes(id));
  if (kept.join() !== ids.filter((id) => shown.has(id)).join()) {
    replace(list, items.map(queueItem)); // an order changed: drawn anew
    return;
  }
  for (const li of [...list.children]) if (!li.dataset.id || !ids.includes(li.dataset.id)) li.remove();
  let next = list.firstElementChild;
  for (const item of items) {
    const fresh = queueItem(item);
    const old = shown.get(item.service_request_id);
    if (!old) {
      list.insertBefore(fresh, next);
    } else {
      if (old.dataset.drawn !== fresh.dataset.drawn) old.replaceWith(fresh);
      next = (old.isConnected ? old : fresh).nextElementSibling;
    }
  }
}

function showMeta() {
  if (currentView() === "map") {
    const meta = document.getElementById("map-meta");
    if (meta && state.mapShown) meta.textContent = state.mapShown.summary + (state.live?.open ? t("map.live") : t("map.refreshes", { seconds: REFRESH_SECONDS }));
    return;
  }
  const q = state.queue;
  const meta = document.getElementById("queue-meta");
  if (!q?.loadedAt || !meta) return;
  replace(
    meta,
    plural("queue.shown", q.items.length) + (q.next ? t("queue.moreBelow") : "") + t("queue.updated"),
    h("time", { datetime: q.loadedAt.toISOString() }, clock(q.loadedAt)),
    state.live?.open ? t("queue.live", { zone: state.city.time_zone }) : t("queue.refreshes", { seconds: REFRESH_SECONDS, zone: state.city.time_zone }),
  );
}

function queueItem(item) {
  const flags = flagsOf(item);
  const id = item.service_request_id;
  const q = state.queue;
  const pick =
    q.code === "assignments"
      ? null
      : h("input", {
          type: "checkbox",
          class: "pick",
          "aria-label": t("queue.select", { id }),
          checked: q.selected.has(id),
          onchange: (event) => {
            if (event.currentTarget.checked) q.selected.add(id);
            else q.selected.delete(id);
            countSelected();
          },
        });
  const arrived = q.arrived?.has(id);
  return h(
    "li",
    {
      class: `item${flags.length ? " flagged" : ""}${arrived ? " arrived" : ""}`,
      "data-id": id,
      // what it was drawn from: a refresh redraws it only when this changed
      "data-drawn": JSON.stringify([item, flags, arrived, q.selected.has(id), language()]),
    },
    pick,
    h(
      "a",
      { href: `#/request/${item.service_request_id}` },
      h("span", { class: "id" }, `#${item.service_request_id}`),
      " ",
      h("strong", {}, serviceName(item.service_code)),
    ),
    // An empty handle: the post that opened it was deleted by its author (every post has one).
    h("p", { class: "desc", lang: item.author_handle ? langOf(item.language) : null }, item.author_handle ? clip(item.description, 240) : t("post.withdrawn")),
    h("p", { class: "tags" }, arrived ? h("span", { class: "tag flag arrived" }, t("queue.arrived")) : null, statusTag(item.status), item.urgency === "urgent" ? h("span", { class: "tag urgent" }, t("urgency.urgent")) : null, flags.map(flagTag)),
    h(
      "dl",
      { class: "due" },
      h("dt", {}, t("due.ack")),
      h("dd", {}, when(item.ack_due_at)),
      h("dt", {}, t("due.resolve")),
      h("dd", {}, when(item.expected_datetime)),
    ),
    h(
      "p",
      { class: "muted small" },
      [
        placeName(item),
        item.assigned_worker ? t("queue.worker", { handle: item.assigned_worker }) : null,
        item.reporters_count > 1 ? t("queue.neighbours", { n: item.reporters_count }) : null,
        item.author_handle ? t("queue.by", { handle: item.author_handle }) : t("queue.withdrawn"),
      ].filter(Boolean).join(" · "),
    ),
  );
}

/** The same action on the selected requests (up to 100), each refused one with its reason. */
function bulkForm() {
  const result = h("p", { id: "bulk-result", role: "status" });
  const workerId = nextId("bulk-worker");
  const send = (action, body) => async (event) => {
    const q = state.queue;
    const form = event.currentTarget.form;
    result.textContent = "";
    result.className = "";
    const ids = [...q.selected].slice(0, 100).map(Number);
    if (!ids.length) {
      result.className = "error";
      result.textContent = t("bulk.selectFirst");
      return;
    }
    await busy(form, async () => {
      try {
        const { data } = await call(`/api/v1/requests/actions/${action}`, { method: "POST", body: { ...body(form), service_request_ids: ids } });
        const refused = data.results.filter((r) => r.status !== 200);
        result.className = refused.length ? "error" : "info";
        append(result, [t("bulk.result", { done: data.succeeded, refused: data.failed }), refused.map((r) => ` #${r.service_request_id}: ${r.detail} (${r.status}).`)]);
        q.selected.clear();
        await refreshQueue();
        countSelected();
      } catch (failure) {
        if (failure.status === 401) return;
        result.className = "error";
        result.textContent = `${failure.detail} (${failure.status})`;
      }
    });
  };
  // folded on a phone's screen like the filters (it pushed the first request below the fold),
  // its summary saying how many are ticked; open at a desk, or with some ticked
  const wide = window.matchMedia("(min-width: 40rem)").matches;
  const form = describedByErrors(h(
    "form",
    { class: "bulk", id: "bulk", method: "post", "aria-label": t("bulk.label"), onsubmit: (event) => event.preventDefault() },
    h("button", { type: "button", onclick: send("acknowledge", () => ({})) }, t("bulk.acknowledge")),
    h("label", { for: workerId }, t("bulk.worker")),
    h("input", { id: workerId, name: "worker", placeholder: "@jordi", autocapitalize: "none", spellcheck: "false" }),
    h("button", { type: "button", onclick: send("assign", (form) => ({ worker: form.elements.worker.value.trim() })) }, t("bulk.assign")),
    result,
  ));
  return h(
    "details",
    { class: "bulk-box", open: wide || state.queue.selected.size > 0 },
    h("summary", {}, t("bulk.label"), " · ", h("span", { id: "bulk-count" }, t("bulk.none"))),
    form,
  );
}

function countSelected() {
  const count = document.getElementById("bulk-count");
  const n = state.queue?.selected.size || 0;
  if (count) count.textContent = n ? t("bulk.count", { n }) + (n > 100 ? t("bulk.first100") : "") : t("bulk.none");
}

/** What is late about a request: its acknowledge-by time passed with nobody acknowledging it,
 * its resolve-by time passed, it was escalated to city hall. */
function flagsOf(item) {
  const now = Date.now();
  const flags = [];
  const open = OPEN.has(item.status);
  if (open && WAITING.has(item.status) && item.ack_due_at && Date.parse(item.ack_due_at) < now) flags.push(["ack-late", t("flag.ackLate")]);
  if (open && item.expected_datetime && Date.parse(item.expected_datetime) < now) flags.push(["overdue", t("flag.overdue")]);
  else if (item.overdue && !flags.length) flags.push(["overdue", t("flag.overdue")]);
  if (item.escalated) flags.push(["escalated", t("flag.escalated")]);
  return flags;
}

const flagTag = ([kind, text]) => h("span", { class: `tag flag ${kind}` }, text);
const statusTag = (status) => h("span", { class: `tag status s-${status}` }, statusName(status));
const statusName = (status) => (has(`status.${status}`) ? t(`status.${status}`) : status.replaceAll("_", " "));
const deliveryState = (which) => (has(`delivery.${which}`) ? t(`delivery.${which}`) : which);
const capital = (text) => text.charAt(0).toUpperCase() + text.slice(1);

function placeName(item) {
  const barri = state.city.barris[item.barri_code || ""];
  const district = state.city.districts[item.district_code || ""];
  return [barri, district].filter(Boolean).join(", ") || (item.queue === "triage" ? t("queue.noDistrict") : item.district_code || "");
}

/** Polling, while the stream is not open: the list or the map, whichever is shown, read again
 * every 30 s. */
function startTimer() {
  stopTimer();
  state.timer = setInterval(() => {
    if (!document.hidden) refreshShown();
  }, REFRESH_SECONDS * 1000);
}

function refreshShown() {
  return currentView() === "map" ? refreshMap() : refreshQueue();
}

function stopTimer() {
  if (state.timer) clearInterval(state.timer);
  state.timer = null;
}

// --- the queue on a map -----------------------------------------------------------------------

const SVG_NS = "http://www.w3.org/2000/svg";
// a marker's half width in pixels, whatever the map's scale: 26 px across, a finger's worth
// (WCAG 2.2's 2.5.8 asks 24)
const MARKER_PX = 13;
// A marker's shape says what its colour says (never the colour alone): overdue a diamond,
// urgent a triangle, on time a circle; drawn 2 units across, scaled to MARKER_PX.
const SHAPES = {
  overdue: "M0 -1.25L1.25 0L0 1.25L-1.25 0Z",
  urgent: "M0 -1.2L1.15 0.9L-1.15 0.9Z",
  "on-time": "M-1 0A1 1 0 1 0 1 0A1 1 0 1 0 -1 0Z",
};

/** An SVG element, as h() makes HTML ones: attributes as given (null skipped), text as text. */
function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== null && value !== undefined) el.setAttribute(name, String(value));
  }
  return append(el, children);
}

const markerKind = (item) => (item.overdue ? "overdue" : item.urgency === "urgent" ? "urgent" : "on-time");
const hasPoint = (item) => item.lat !== null && item.long !== null;
const age = (item) => (item.requested_datetime ? relative(new Date(item.requested_datetime)) : "—");

/** The queue's requests on the city's own outlines (the district's and its barris', from
 * /console/map.json: no tiles from elsewhere), with the queue's filters; those without a point
 * listed beside it, counted, so that none is hidden. Each marker is a link to its request. */
async function showMap(code, filters) {
  state.mapShown = null;
  state.back = `#/map/${encodeURIComponent(code)}${query(filters)}`;
  const name = queueName(code);
  const title = t("map.title", { name });
  const frame = h("div", { class: "map-frame", id: "map-frame" }, h("p", { class: "loading" }, t("map.loading")));
  const side = h("div", { class: "map-side", id: "map-side" });
  const meta = h("p", { class: "muted", id: "map-meta" });
  const error = h("p", { class: "error", role: "alert", id: "map-error" });
  replace(
    main(),
    h(
      "section",
      { "aria-labelledby": "map-title", class: "queue map-view" },
      h(
        "div",
        { class: "heading" },
        h("h1", { id: "map-title", tabindex: "-1" }, title),
        h(
          "p",
          { class: "views" },
          h("a", { class: "button", id: "to-list", href: `#/queue/${encodeURIComponent(code)}${query(filters)}` }, t("map.list")),
          h("button", { type: "button", id: "map-refresh", onclick: () => showMap(code, filters) }, t("queue.refresh")),
        ),
      ),
      filterBox(code, filters),
      meta,
      error,
      h("div", { class: "map-layout" }, frame, side),
    ),
  );
  document.title = `${title} · Plaza`;
  keepFocus(document.getElementById("map-title"));
  const { sort: _order, ...kept } = filters; // a map has no order
  try {
    const [{ data: map }, { data: places }] = await Promise.all([
      call(`map.json${query({ district: state.city.districts[code] ? code : null })}`, { auth: false }),
      call(`/api/v1/districts/${encodeURIComponent(code)}/queue/places${query(kept)}`),
    ]);
    if (currentView() !== "map" || !frame.isConnected) return;
    state.mapShown = { code, kept, map, name, ids: new Set(places.items.map((item) => item.service_request_id)), summary: "" };
    drawMap(frame, side, map, places, name);
    if (!state.live?.open) startTimer(); // polling until the stream is open, as the list
    startMapLive(code);
  } catch (failure) {
    if (failure.status === 401 || !frame.isConnected) return;
    replace(frame);
    error.textContent = failure.detail;
  }
}

function drawMap(frame, side, map, places, name) {
  const p = map.projection;
  const at = (item) => [item.long * p.x_per_lon - p.x0, p.y0 - item.lat * p.y_per_lat];
  const placed = places.items.filter(hasPoint);
  const byAddress = places.items.filter((item) => !hasPoint(item) && item.address);
  const nowhere = places.items.filter((item) => !hasPoint(item) && !item.address);
  // the map's frame, widened to a request placed outside it (a queue's may lie beyond its
  // district): none is drawn off the map
  let [left, top, right, bottom] = [0, 0, map.width, map.height];
  for (const item of placed) {
    const [x, y] = at(item);
    [left, top, right, bottom] = [Math.min(left, x - 150), Math.min(top, y - 150), Math.max(right, x + 150), Math.max(bottom, y + 150)];
  }
  const drawn = svg(
    "svg",
    { id: "map", class: "map", viewBox: `${left} ${top} ${right - left} ${bottom - top}`, role: "group", "aria-label": t("map.label", { name }) },
    svg(
      "g",
      { class: "areas", "aria-hidden": "true" },
      // the barris first, the district's outline over their edges
      [...map.areas.filter((a) => a.path && a.kind === "barri"), ...map.areas.filter((a) => a.path && a.kind !== "barri")].map((a) =>
        svg("path", { d: a.path, class: `area ${a.kind}`, "fill-rule": "evenodd" }),
      ),
      map.areas.filter((a) => a.label).map((a) => svg("text", { x: a.label[0], y: a.label[1], class: "area-label", "text-anchor": "middle" }, a.name)),
    ),
    svg("g", { class: "markers" }, placed.map((item) => marker(item, at(item)))),
  );
  replace(frame, drawn, map.outlines ? null : h("p", { class: "muted small" }, t("map.noOutlines")));
  replace(
    side,
    places.more ? h("p", { class: "notice" }, t("map.more", { n: places.count })) : null,
    legend(),
    placeList("by-address", t("map.byAddress", { n: byAddress.length }), byAddress, (item) => item.address),
    placeList("no-place", t("map.noPlace", { n: nowhere.length }), nowhere, (item) => placeName(item) || t("map.noPlaceGiven")),
  );
  if (state.mapShown) state.mapShown.summary = t("map.summary", { onMap: placed.length, byAddress: byAddress.length, noPlace: nowhere.length });
  showMeta();
  placeMarkers(drawn);
}

/** The map read again (a change came by the stream), the focus kept on the request it was on
 * (its marker, or its link in a list), new arrivals said politely, as the list does. */
async function refreshMap() {
  const shown = state.mapShown;
  if (!shown || currentView() !== "map") return;
  let places;
  try {
    ({ data: places } = await call(`/api/v1/districts/${encodeURIComponent(shown.code)}/queue/places${query(shown.kept)}`));
  } catch {
    return; // a 401 signs out; anything else: the next change, poll or "Refresh" reads it again
  }
  const [frame, side] = ["map-frame", "map-side"].map((id) => document.getElementById(id));
  if (state.mapShown !== shown || !frame) return;
  const active = document.activeElement;
  const focused = active?.closest?.("#map a.marker, #map-side li[data-id]");
  const id = focused?.dataset.id;
  const where = focused?.matches("a.marker") ? "#map a.marker" : "#map-side li";
  drawMap(frame, side, shown.map, places, shown.name);
  const again = id ? document.querySelector(`${where}[data-id="${CSS.escape(id)}"]`) : null;
  (again?.matches("a") ? again : again?.querySelector("a"))?.focus({ preventScroll: true });
  const arrivals = places.items.filter((item) => !shown.ids.has(item.service_request_id));
  shown.ids = new Set(places.items.map((item) => item.service_request_id));
  if (arrivals.length) {
    announce(plural("live.arrived", arrivals.length, { ids: arrivals.map((item) => `#${item.service_request_id} ${serviceName(item.service_code)}`).join(", ") }));
  }
}

/** The map follows its queue's stream as the list does, and polls as the list does while the
 * stream is down (connect() and startTimer() are the list's own). */
function startMapLive(code) {
  if (document.hidden || !state.me) return;
  if (state.live?.view === "map" && state.live.code === code) return;
  stopLive();
  state.live = newLive("map", code);
  connect(state.live);
}

function marker(item, [x, y]) {
  const id = item.service_request_id;
  const kind = markerKind(item);
  const name = [
    t("map.marker", { id, service: serviceName(item.service_code), place: item.address || placeName(item) || t("map.noPlaceGiven"), age: age(item) }),
    item.overdue ? t("flag.overdue") : null,
    item.urgency === "urgent" ? t("urgency.urgent") : null,
    item.escalated ? t("flag.escalated") : null,
    statusName(item.status),
  ].filter(Boolean).join(", ");
  return svg(
    "a",
    { href: safeUrl(`#/request/${id}`), class: `marker ${kind}`, "data-id": id, "aria-label": name },
    svg("title", {}, name),
    svg("g", { class: "pin", "data-x": x, "data-y": y }, svg("path", { d: SHAPES[kind] })),
  );
}

/** Sizes the markers and the barris' names in pixels at the map's present scale, and spreads
 * the markers closer than one's width around their point (three reports on one corner are
 * three markers touching there, each its own link), rather than one over the others. */
function placeMarkers(map) {
  const scale = map.getScreenCTM()?.a;
  if (!scale) return; // not drawn (a hidden tab): placed on the next resize
  const k = 1 / scale; // the map's units (metres) per pixel
  const groups = [];
  for (const pin of map.querySelectorAll(".pin")) {
    const x = Number(pin.dataset.x);
    const y = Number(pin.dataset.y);
    const near = groups.find((g) => Math.hypot(g.x - x, g.y - y) < 3 * MARKER_PX * k);
    if (near) near.pins.push(pin);
    else groups.push({ x, y, pins: [pin] });
  }
  for (const { x, y, pins } of groups) {
    const n = pins.length;
    // neighbours a marker's width and its outline apart (a diamond is 2.5 units across)
    const radius = n > 1 ? (1.5 * MARKER_PX * k) / Math.sin(Math.PI / n) : 0;
    pins.forEach((pin, i) => {
      const angle = -Math.PI / 2 + (2 * Math.PI * i) / n;
      pin.setAttribute("transform", `translate(${x + radius * Math.cos(angle)} ${y + radius * Math.sin(angle)}) scale(${MARKER_PX * k})`);
    });
  }
  for (const label of map.querySelectorAll(".area-label")) label.setAttribute("font-size", String(13 * k));
}

function legend() {
  const entry = (kind, word) =>
    h("li", {}, svg("svg", { class: `marker ${kind}`, viewBox: "-1.5 -1.5 3 3", width: 20, height: 20, "aria-hidden": "true" }, svg("g", { class: "pin" }, svg("path", { d: SHAPES[kind] }))), ` ${word}`);
  return h(
    "section",
    { class: "legend", "aria-labelledby": "map-legend" },
    h("h2", { id: "map-legend" }, t("map.legend")),
    h("ul", {}, entry("on-time", t("map.legendOnTime")), entry("urgent", t("map.legendUrgent")), entry("overdue", t("map.legendOverdue"))),
  );
}

function placeList(id, title, items, where) {
  return h(
    "section",
    { class: "map-list", id, "aria-labelledby": `${id}-title` },
    h("h2", { id: `${id}-title` }, title),
    items.length
      ? h(
          "ul",
          { class: "places" },
          items.map((item) =>
            h(
              "li",
              { "data-id": item.service_request_id },
              h("a", { href: `#/request/${item.service_request_id}` }, `#${item.service_request_id} ${serviceName(item.service_code)}`),
              h("span", { class: "small" }, ` · ${[where(item), age(item), item.overdue ? t("flag.overdue") : null, item.urgency === "urgent" ? t("urgency.urgent") : null].filter(Boolean).join(" · ")}`),
            ),
          ),
        )
      : h("p", { class: "empty" }, t("map.none")),
  );
}

// --- live updates -------------------------------------------------------------------------------

const LIVE_BACKOFF_MAX_MS = 30_000;

/** The queue's changes as they happen: the manager API's Server-Sent Events, read with fetch()
 * so that the token goes in the Authorization header (EventSource would put it in the URL). A
 * change refreshes the list (keeping the user's place, saying new arrivals); while the stream
 * is down, the 30 s polling stands in and the stream is tried again, from the last event seen,
 * after 1, 2, 4... up to 30 s. A worker's assignments have their own stream, the same way; the
 * queue's map follows the same stream and polls the same way (startMapLive). */
function startLive() {
  const q = state.queue;
  if (!q || document.hidden || !state.me) return;
  if (state.live?.view === "queue" && state.live.code === q.code) return;
  stopLive();
  state.live = newLive("queue", q.code);
  connect(state.live);
}

/** On a request's page, its queue's stream says when someone else changes it: a notice with a
 * button to show it as it now is, rather than the page redrawn under a form being filled in
 * (and a 412 only once the user acts). */
function startRequestLive(r) {
  if (state.me?.role === "worker" || document.hidden || !r.queue) return;
  const id = r.service_request_id;
  if (state.live?.view === "request" && state.live.code === r.queue && state.live.requestId === id) return;
  stopLive();
  state.live = { ...newLive("request", r.queue), requestId: id };
  connect(state.live);
}

function newLive(view, code) {
  return { view, code, controller: null, lastId: null, open: false, failures: 0, retry: 1000, timer: null, refresh: null, change: null, touched: new Set() };
}

function stopLive() {
  const live = state.live;
  if (!live) return;
  state.live = null;
  live.controller?.abort();
  clearTimeout(live.timer);
  clearTimeout(live.refresh);
  if (live.open) showMeta();
}

async function connect(live) {
  live.controller = new AbortController();
  let failure = null;
  try {
    const path = live.code === "assignments" ? "/api/v1/assignments/events" : `/api/v1/districts/${encodeURIComponent(live.code)}/queue/events`;
    await stream(path, {
      lastEventId: live.lastId,
      signal: live.controller.signal,
      onOpen: () => {
        live.open = true;
        live.failures = 0;
        stopTimer();
        showMeta();
        // what changed between the list's reading and the stream's start (a stream resumed
        // from its last event gets those as events)
        if (live.lastId === null) liveRefresh(live);
      },
      onRetry: (ms) => {
        live.retry = Math.max(1000, ms);
      },
      onEvent: (event) => liveEvent(live, event),
    });
  } catch (error) {
    failure = error;
  }
  if (state.live !== live || failure?.name === "AbortError") return;
  live.open = false;
  if (failure?.status === 401) return; // the sign-in is back, saying why
  if (failure?.status === 403 || failure?.status === 404) {
    stopLive(); // not hers (any more): the polling's next answer says so by the list or map
    if (live.view !== "request") {
      startTimer();
      refreshShown();
    }
    return;
  }
  if (live.view !== "request") startTimer();
  showMeta();
  const wait = failure?.retryAfter ? failure.retryAfter * 1000 : Math.min(LIVE_BACKOFF_MAX_MS, live.retry * 2 ** live.failures);
  live.failures += 1;
  live.timer = setTimeout(() => state.live === live && connect(live), wait);
}

function liveEvent(live, event) {
  if (event.event === "end") {
    // the credential was revoked or expired, the user disabled, or the queue no longer hers
    let problem = {};
    try {
      problem = JSON.parse(event.data);
    } catch {
      // said below without a detail
    }
    if (problem.status === 401) {
      stopLive();
      sessionEnded(new ApiError(401, problem));
    }
    return; // the stream closes; connect() decides what comes next
  }
  if (event.id) live.lastId = event.id;
  let change = {};
  try {
    change = JSON.parse(event.data);
  } catch {
    // a change all the same: the queue is read again
  }
  if (live.view === "request") {
    if (change.item?.service_request_id !== live.requestId) return;
    live.change = change;
  } else if (change.in_queue && change.item?.service_request_id) {
    live.touched.add(change.item.service_request_id);
  }
  liveRefresh(live);
}

/** One refresh for a burst of changes (a bulk action sends one event per request). */
function liveRefresh(live) {
  clearTimeout(live.refresh);
  live.refresh = setTimeout(() => {
    if (state.live !== live) return;
    if (live.view === "request") return checkRequest(live);
    if (live.view === "map") return refreshMap();
    // none named (the catch-up as the stream opens, a request that left): the whole-queue rule
    const touched = live.touched.size ? live.touched : null;
    live.touched = new Set();
    return refreshQueue(false, touched);
  }, 200);
}

/** Whether the request shown changed since it was drawn (its version: the user's own actions
 * draw it again, so only another's shows here). */
async function checkRequest(live) {
  const id = live.requestId;
  let data;
  try {
    ({ data } = await call(`/api/v1/requests/${id}`));
  } catch {
    return; // a 401 signs out; anything else is said when she acts
  }
  const shown = state.shown;
  const holder = document.getElementById("changed");
  if (state.live !== live || !shown || shown.service_request_id !== id || !holder || data.version <= shown.version) return;
  const change = live.change || {};
  const text = change.actor
    ? t("live.changedBy", { actor: change.actor, kind: eventName(change.kind || ""), version: data.version })
    : t("live.changed", { version: data.version });
  replace(holder, h("p", {}, text), h("button", { type: "button", onclick: () => showRequest(id) }, t("live.show")));
  holder.hidden = false;
  announce(text);
}

// --- replies on their way ---------------------------------------------------------------------

/** The public replies' deliveries to the social platforms: those that failed for good wait for
 * a retry here. */
async function showReplies(which) {
  const list = h("ol", { class: "items", id: "delivery-items" }, h("li", { class: "loading" }, t("queue.loading")));
  const error = h("p", { class: "error", role: "alert", id: "replies-error" });
  const stateId = nextId("state");
  replace(
    main(),
    h(
      "section",
      { class: "deliveries", "aria-labelledby": "replies-title" },
      h("div", { class: "heading" }, h("h1", { id: "replies-title", tabindex: "-1" }, t("replies.title"))),
      h(
        "form",
        { method: "post", class: "inline", onsubmit: (event) => event.preventDefault() },
        h("label", { for: stateId }, t("replies.show")),
        h(
          "select",
          { id: stateId, onchange: (event) => { location.hash = `#/replies?state=${event.currentTarget.value}`; } },
          [["failed", t("replies.failed")], ["pending", t("replies.pending")], ["sending", t("replies.sending")], ["posted", t("replies.posted")], ["", t("replies.all")]].map(([v, text]) => h("option", { value: v, selected: v === which }, text)),
        ),
      ),
      error,
      list,
    ),
  );
  document.title = `${t("replies.pageTitle")} · Plaza`;
  keepFocus(document.getElementById("replies-title"));
  try {
    const { data } = await call(`/api/v1/replies${query({ state: which, limit: 200 })}`);
    replace(list, data.length ? data.map(delivery) : h("li", { class: "empty" }, which === "failed" ? t("replies.noneFailed") : t("replies.none")));
  } catch (failure) {
    if (failure.status === 401) return;
    replace(list);
    error.textContent = failure.detail;
  }
}

function delivery(d) {
  const error = h("p", { class: "error", role: "alert" });
  const status = h("span", { class: `tag status s-${d.state}` }, deliveryState(d.state));
  const retry =
    d.state === "failed"
      ? describedByErrors(h("form", {
          method: "post",
          class: "inline",
          onsubmit: (event) =>
            submit(event, error, () => call(`/api/v1/replies/${encodeURIComponent(d.reply_id)}/retry`, { method: "POST" }), (result) => {
              status.textContent = deliveryState(result.data.state);
              const item = event.target.closest("li");
              event.target.remove();
              // its button is gone with the form: the focus goes to the delivery's heading
              item.querySelector("h2").focus();
              announce(t("replies.retried"));
            }),
        }, h("button", { type: "submit" }, t("replies.retry")), error))
      : null;
  return h(
    "li",
    { class: "item", "data-reply": d.reply_id },
    h("h2", { tabindex: "-1" }, d.service_request_id ? h("a", { href: `#/request/${d.service_request_id}` }, t("replies.request", { id: d.service_request_id })) : t("replies.noRequest"), ` · ${d.platform} · ${d.kind}`),
    h("p", { class: "tags" }, status, h("span", { class: "tag" }, plural("replies.attempts", d.attempts))),
    h("p", { class: "text" }, d.text),
    d.last_error ? h("p", { class: "small" }, t("replies.lastError", { error: d.last_error })) : null,
    d.public_url ? h("p", { class: "small" }, externalLink(d.public_url, t("replies.onPlatform"))) : null,
    h("p", { class: "muted small" }, t("replies.updated"), when(d.updated_at)),
    retry,
  );
}

// --- city hall's monthly report ---------------------------------------------------------------

// The CSV's columns the screen shows (README "City hall's SLA view" has them all), in its order.
const REPORT_COLUMNS = [
  "received", "acknowledged_in_time", "resolved_in_time", "acknowledge_missed", "resolve_missed",
  "acknowledge_median_hours", "acknowledge_p90_hours", "resolve_median_hours", "resolve_p90_hours",
  "still_open", "escalated",
];

function readsReport() {
  return state.me?.role === "city_hall" || state.me?.role === "admin";
}

/** A month as YYYY-MM on the city's calendar: `back` months before the current one. */
function cityMonth(back = 0) {
  const parts = Object.fromEntries(
    formatter({ year: "numeric", month: "numeric" }).formatToParts(new Date()).map((p) => [p.type, p.value]),
  );
  const index = Number(parts.year) * 12 + Number(parts.month) - 1 - back;
  return `${Math.floor(index / 12)}-${String((index % 12) + 1).padStart(2, "0")}`;
}

/** City hall's monthly report: the city's and each district's totals as a table, and the API's
 * CSV to download, as it came (fetched with the token in its header, never in a URL). */
async function showReport(asked) {
  const month = asked || cityMonth(1);
  const monthId = nextId("month");
  const error = h("p", { class: "error", role: "alert", id: "report-error" });
  const result = h("div", { id: "report-result" }, h("p", { class: "loading" }, t("report.loading")));
  const form = describedByErrors(h(
    "form",
    {
      method: "post",
      class: "inline",
      id: "report-form",
      onsubmit: (event) => {
        event.preventDefault();
        const chosen = new FormData(event.currentTarget).get("month");
        if (chosen) location.hash = `#/report?month=${encodeURIComponent(chosen)}`;
      },
    },
    h("label", { for: monthId }, t("report.month")),
    h("input", { id: monthId, name: "month", type: "month", value: month, min: "1970-01", max: cityMonth(0), required: true }),
    h("button", { type: "submit" }, t("report.show")),
    error,
  ));
  replace(
    main(),
    h(
      "section",
      { class: "report", "aria-labelledby": "report-title" },
      h("div", { class: "heading" }, h("h1", { id: "report-title", tabindex: "-1" }, t("report.title"))),
      form,
      result,
    ),
  );
  document.title = `${t("report.pageTitle")} · Plaza`;
  keepFocus(document.getElementById("report-title"));
  try {
    const answer = await call(`/api/v1/reports/monthly${query({ month })}`, { accept: "text/csv" });
    if (currentView() !== "report") return;
    const named = /filename="([^"]+)"/.exec(answer.headers.get("Content-Disposition") || "");
    replace(result, reportTable(month, parseCsv(answer.data)), downloadLink(answer.data, named ? named[1] : `plaza-report-${month}.csv`));
  } catch (failure) {
    if (failure.status === 401) return;
    replace(result);
    // the API's 422 names no field but the month (its words English): the console's, tied to it
    error.textContent = failure.status === 422 ? t("report.noMonth", { month }) : failure.detail;
    if (failure.status === 422) form.elements.month.setAttribute("aria-invalid", "true");
  }
}

/** RFC 4180's CSV as rows of cells: quoted cells may hold commas, quotes ("") and line ends. */
function parseCsv(text) {
  const rows = [];
  let row = [];
  let cell = "";
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') {
        cell += '"';
        i++;
      } else if (c === '"') quoted = false;
      else cell += c;
    } else if (c === '"') quoted = true;
    else if (c === ",") {
      row.push(cell);
      cell = "";
    } else if (c === "\n" || c === "\r") {
      if (c === "\r" && text[i + 1] === "\n") i++;
      row.push(cell);
      rows.push(row);
      row = [];
      cell = "";
    } else cell += c;
  }
  if (cell || row.length) rows.push([...row, cell]);
  const [header, ...lines] = rows;
  return lines.map((cells) => Object.fromEntries(header.map((name, n) => [name, cells[n] ?? ""])));
}

/** The city's row and each district's totals (every service), the city first. */
function reportTable(month, rows) {
  const totals = rows.filter((r) => r.service_code === "all");
  totals.sort((a, b) => (a.district_code === "all" ? -1 : b.district_code === "all" ? 1 : 0));
  const number = new Intl.NumberFormat(locale(), { maximumFractionDigits: 2 });
  const cell = (value) => (value === "" ? "—" : number.format(Number(value)));
  const districtName = (r) => {
    if (r.district_code === "all") return state.city.name || r.district;
    if (r.district_code === "none") return t("report.noDistrict");
    return state.city.districts[r.district_code] || r.district;
  };
  const caption = t("report.caption", { month: monthName(month) });
  return h(
    "div",
    { class: "table-scroll", role: "region", "aria-label": caption, tabindex: "0" },
    h(
      "table",
      { class: "report-table", id: "report-table" },
      h("caption", {}, caption),
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, t("report.col.district")), REPORT_COLUMNS.map((c) => h("th", { scope: "col" }, t(`report.col.${c}`))))),
      h("tbody", {}, totals.map((r) => h(
        "tr",
        { "data-district": r.district_code, class: r.district_code === "all" ? "total" : null },
        h("th", { scope: "row" }, districtName(r)),
        REPORT_COLUMNS.map((c) => h("td", {}, cell(r[c]))),
      ))),
    ),
  );
}

function monthName(month) {
  const [year, number] = month.split("-").map(Number);
  return new Intl.DateTimeFormat(locale(), { year: "numeric", month: "long", timeZone: "UTC" }).format(new Date(Date.UTC(year, number - 1, 15)));
}

let reportUrl = null; // the blob: URL of the CSV shown, released when another is

/** A link saving the CSV as the API sent it (a blob: URL of its text, not a second call). */
function downloadLink(text, filename) {
  if (reportUrl) URL.revokeObjectURL(reportUrl);
  reportUrl = URL.createObjectURL(new Blob([text], { type: "text/csv;charset=utf-8" }));
  const link = h("a", { id: "report-download", download: filename }, t("report.download", { file: filename }));
  link.setAttribute("href", reportUrl);
  return h("p", {}, link);
}

// --- a request --------------------------------------------------------------------------------

/** A request's page. `focus` names the heading that takes the focus once it is drawn (the
 * title's by default): after an action or a note, the section the user acted in, so that the
 * keyboard goes on from there (the next action is a Tab away) rather than from the page's top. */
async function showRequest(id, notice, focus = "request-title") {
  state.shown = null;
  state.requestId = id;
  const back = state.back || (state.queue ? `#/queue/${encodeURIComponent(state.queue.code)}${query(state.queue.filters)}` : "#/");
  const page = h("article", { class: "request", "aria-labelledby": "request-title" }, h("p", { class: "loading" }, t("request.loading", { id })));
  replace(
    main(),
    h("nav", { class: "crumbs", "aria-label": t("request.backLabel") }, h("a", { href: state.me.role === "worker" ? "#/" : back }, t("request.back"))),
    page,
  );
  try {
    const [{ data, etag }, { data: events }] = await Promise.all([
      call(`/api/v1/requests/${id}`),
      call(`/api/v1/requests/${id}/history`),
    ]);
    if (state.requestId !== id || currentView() !== "request") return;
    renderRequest(page, data, etag, events, notice, focus);
  } catch (failure) {
    if (failure.status === 401) return;
    replace(page, h("h1", { id: "request-title", tabindex: "-1" }, t("request.title", { id })), h("p", { class: "error", role: "alert" }, failure.detail));
    page.querySelector("h1").focus();
  }
}

function renderRequest(page, r, etag, events, notice, focus) {
  document.title = `#${r.service_request_id} ${serviceName(r.service_code)} · Plaza`;
  const flags = flagsOf(r);
  replace(
    page,
    h(
      "header",
      { class: "heading" },
      h("h1", { id: "request-title", tabindex: "-1" }, `#${r.service_request_id} ${serviceName(r.service_code)}`),
      h("button", { type: "button", id: "reload", onclick: () => showRequest(r.service_request_id) }, t("request.refresh")),
    ),
    h("p", { class: "tags" }, statusTag(r.status), r.urgency === "urgent" ? h("span", { class: "tag urgent" }, t("urgency.urgent")) : null, flags.map(flagTag)),
    notice ? h("div", { class: "notice", role: "alert", id: "conflict" }, notice) : null,
    h("div", { class: "notice", id: "changed", hidden: true }), // said through #announce

    // what the citizen said and what can be done first: on a phone the rest is a scroll away
    section(t("request.posts", { n: r.reports.length }), reports(r)),
    r.media_urls.length ? section(t("request.photos"), photos(r.media_urls)) : null,
    section(t("request.actions"), actions(r, etag), "actions-title"),
    section(t("request.location"), location_(r)),
    section(t("request.summary"), facts(r)),
    section(t("request.replies", { n: r.replies.length }), replies(r)),
    section(t("request.notes"), notes(r), "notes-title"),
    section(t("request.history"), historyList(events)),
  );
  // the notice, a role=alert, is read out as well
  (page.querySelector(`#${focus}`) || page.querySelector("h1")).focus();
  state.shown = r;
  startRequestLive(r);
}

/** A section under its h2; one with an `id` can take the focus (showRequest's `focus`). */
function section(title, content, id) {
  const named = id || nextId("s");
  return h("section", { "aria-labelledby": named }, h("h2", { id: named, tabindex: id ? "-1" : null }, title), content);
}

function facts(r) {
  const rows = [
    [t("fact.status"), t("fact.statusValue", { status: statusName(r.status), open311: r.open311_status, extended: r.extended_status })],
    [t("fact.queue"), queueName(r.queue)],
    [t("fact.team"), r.agency_responsible],
    [t("fact.urgency"), has(`urgency.${r.urgency}`) ? t(`urgency.${r.urgency}`) : r.urgency],
    [t("fact.language"), LANGUAGES[r.language] ? `${LANGUAGES[r.language]} (${r.language})` : r.language],
    [t("fact.reporters"), String(r.reporters_count)],
    [t("fact.worker"), r.assigned_worker || t("fact.nobody")],
    [t("fact.reported"), when(r.requested_datetime)],
    [t("fact.ackBy"), when(r.ack_due_at)],
    [t("fact.resolveBy"), when(r.expected_datetime)],
    [t("fact.escalated"), r.escalated ? t("fact.yes") : t("fact.no")],
    [t("fact.statusNotes"), r.status_notes],
    [t("fact.duplicateOf"), r.duplicate_of ? h("a", { href: `#/request/${r.duplicate_of}` }, `#${r.duplicate_of}`) : null],
    [t("fact.fixPhoto"), r.resolution_photo_url ? externalLink(r.resolution_photo_url) : null],
    [t("fact.version"), String(r.version)],
  ];
  return dl(rows);
}

function dl(rows) {
  return h("dl", { class: "facts" }, rows.filter(([, v]) => v !== null && v !== undefined && v !== "").map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

function location_(r) {
  return dl([
    [t("place.barri"), state.city.barris[r.barri_code || ""] ? `${state.city.barris[r.barri_code]} (${r.barri_code})` : r.barri_code],
    [t("place.district"), state.city.districts[r.district_code || ""] ? `${state.city.districts[r.district_code]} (${r.district_code})` : r.district_code || t("place.noneFound")],
    [t("place.coordinates"), r.lat !== null && r.long !== null ? `${r.lat.toFixed(5)}, ${r.long.toFixed(5)}` : t("place.noneGiven")],
    [t("place.address"), r.address],
    [t("place.source"), r.location_source],
  ]);
}

function reports(r) {
  const mayManage = state.me.role !== "worker";
  return h(
    "ol",
    { class: "thread" },
    r.reports.map((p) =>
      h(
        "li",
        { class: "post citizen" },
        h("p", { class: "byline" }, h("strong", {}, p.withdrawn ? t("post.withdrawnBy") : p.author_handle), t("post.on", { platform: p.platform }), when(p.reported_at), p.merged ? h("span", { class: "tag" }, t("post.merged")) : null),
        // the request's language is its first post's; a merged one's is not known
        h("p", { class: "text", lang: p.merged || p.withdrawn ? null : langOf(r.language) }, p.withdrawn ? t("post.withdrawn") : p.text),
        p.contact ? h("p", { class: "muted small" }, t("post.contact", { contact: [p.contact.first_name, p.contact.last_name, p.contact.email, p.contact.phone].filter(Boolean).join(" · ") })) : null,
        mayManage && p.merged ? splitForm(r, p) : null,
      ),
    ),
    r.source_public_url ? h("li", { class: "muted small" }, externalLink(r.source_public_url, t("post.first"))) : null,
  );
}

function splitForm(r, p) {
  const error = h("p", { class: "error", role: "alert" });
  return describedByErrors(h(
    "form",
    {
      method: "post",
      class: "inline",
      onsubmit: (event) =>
        submit(event, error, () =>
          call(`/api/v1/requests/${r.service_request_id}/split`, { method: "POST", body: { platform: p.platform, post_id: p.post_id } }),
          (result) => {
            announce(t("split.done", { id: result.data.service_request_id }));
            location.hash = `#/request/${result.data.service_request_id}`;
          }),
    },
    h("button", { type: "submit" }, t("split.button")),
    error,
  ));
}

function photos(urls) {
  return h(
    "ul",
    { class: "photos" },
    urls.map((url, i) => {
      if (!safeUrl(url) || url.startsWith("#")) return h("li", {}, t("photo.notUrl", { n: i + 1, url }));
      const holder = h("div", { class: "photo" });
      // Loaded only when asked: opening a request tells no photo host that a manager read it.
      const show = h("button", {
        type: "button",
        onclick: () => {
          replace(holder, h("img", { src: url, alt: t("photo.alt", { n: i + 1 }), referrerpolicy: "no-referrer", loading: "lazy" }));
          // the button goes: the focus stays by the photo, on its link, not the page's top
          show.previousElementSibling.focus();
          show.remove();
        },
      }, t("photo.show", { n: i + 1 }));
      return h("li", {}, externalLink(url, t("photo.link", { n: i + 1 })), " ", show, holder);
    }),
  );
}

function replies(r) {
  if (!r.replies.length) return h("p", { class: "empty" }, t("reply.none"));
  return h(
    "ol",
    { class: "thread" },
    r.replies.map((reply) =>
      h(
        "li",
        { class: "post city" },
        h("p", { class: "byline" }, h("strong", {}, t("reply.city")), t("reply.on", { platform: reply.platform, kind: reply.kind, language: reply.language }), reply.posted_at ? when(reply.posted_at) : t("reply.notPosted")),
        h("p", { class: "text", lang: langOf(reply.language) }, reply.text),
      ),
    ),
  );
}

function notes(r) {
  const list = r.notes.length
    ? h("ol", { class: "thread" }, r.notes.map((n) => h("li", { class: `post note${n.public ? " public" : ""}` }, h("p", { class: "byline" }, h("strong", {}, n.actor), ` · ${n.kind} · ${n.public ? t("note.public") : t("note.internal")} · `, when(n.at)), h("p", { class: "text" }, n.note))))
    : h("p", { class: "empty" }, t("note.none"));
  const error = h("p", { class: "error", role: "alert" });
  const textId = nextId("note");
  const publicId = nextId("public");
  const form = h(
    "form",
    {
      method: "post",
      class: "stack",
      id: "note-form",
      onsubmit: (event) => {
        const data = new FormData(event.currentTarget);
        return submit(event, error, () =>
          call(`/api/v1/requests/${r.service_request_id}/notes`, { method: "POST", body: { note: data.get("note"), public: data.get("public") === "on" } }),
          () => {
            announce(t("note.added"));
            showRequest(r.service_request_id, undefined, "notes-title");
          });
      },
    },
    h("label", { for: textId }, t("note.add")),
    h("textarea", { id: textId, name: "note", rows: 3, required: true, maxlength: 2000 }),
    h("label", { class: "check", for: publicId }, h("input", { id: publicId, type: "checkbox", name: "public" }), t("note.publicBox")),
    h("button", { type: "submit" }, t("note.submit")),
    error,
  );
  return [list, describedByErrors(form)];
}

function actions(r, etag) {
  if (!r.allowed_actions.length) return h("p", { class: "empty" }, t("action.none"));
  return h("div", { class: "action-list" }, r.allowed_actions.map((action) => actionForm(r, etag, action)));
}

function actionForm(r, etag, action) {
  const known = action in ACTION_FIELDS;
  const spec = { label: known ? t(`action.${action}`) : action.replaceAll("_", " "), fields: known ? ACTION_FIELDS[action] : ["note"] };
  const error = h("p", { class: "error", role: "alert" });
  const inputs = spec.fields.map((name) => {
    const id = nextId(name);
    let input;
    if (name === "note") input = h("textarea", { id, name, rows: 2, maxlength: 2000 });
    else if (name === "district_code") {
      input = h("select", { id, name }, h("option", { value: "" }, t("field.sameDistrict")), Object.entries(state.city.districts).map(([code, dname]) => h("option", { value: code }, `${code} ${dname}`)));
    } else if (name === "duplicate_of") input = h("input", { id, name, type: "number", min: 1, inputmode: "numeric", required: true });
    else if (name === "photo_url") input = h("input", { id, name, type: "url", placeholder: "https://…" });
    else input = h("input", { id, name, required: name === "worker", autocapitalize: "none", spellcheck: "false" });
    return h("div", { class: "field" }, h("label", { for: id }, t(`field.${name}`)), input);
  });
  return describedByErrors(h(
    "form",
    {
      method: "post",
      class: `action card stack action-${action}`,
      "data-action": action,
      onsubmit: (event) => {
        const data = new FormData(event.currentTarget);
        const body = {};
        for (const name of spec.fields) {
          const value = String(data.get(name) || "").trim();
          if (!value) continue;
          body[name] = name === "duplicate_of" ? Number(value) : value;
        }
        return submit(event, error, () =>
          call(`/api/v1/requests/${r.service_request_id}/actions/${action}`, { method: "POST", body, ifMatch: etag }),
          (result) => {
            announce(t("action.done", { action: spec.label, status: statusName(result.data.status) }));
            showRequest(r.service_request_id, undefined, "actions-title");
          },
          (failure) => {
            if (failure.status !== 412) return false;
            showRequest(r.service_request_id, t("action.conflict", { detail: failure.detail }));
            return true;
          });
      },
    },
    spec.fields.length ? h("h3", {}, spec.label) : null,
    inputs,
    h("button", { type: "submit", class: "primary" }, spec.label),
    error,
  ));
}

function historyList(events) {
  if (!events.length) return h("p", { class: "empty" }, t("history.none"));
  return h(
    "ol",
    { class: "history" },
    events.map((e) =>
      h(
        "li",
        {},
        h("p", { class: "byline" }, h("strong", {}, eventName(e.kind)), t("history.by", { actor: e.actor }), when(e.at), ` · v${e.version}`),
        changes(e),
        e.note ? h("p", { class: "text" }, e.public ? t("history.publicNote") : t("history.internalNote"), e.note) : null,
      ),
    ),
  );
}

/** An event's kind in the console's language: "created", or the action's name (English keeps
 * the kind as the API writes it: "resolve by user:maria"). */
function eventName(kind) {
  if (has(`history.${kind}`)) return t(`history.${kind}`);
  if (language() !== "en" && has(`action.${kind}`)) return t(`action.${kind}`);
  return kind.replaceAll("_", " ");
}

function changes(e) {
  const keys = Object.keys(e.after || {}).filter((k) => JSON.stringify(e.before?.[k]) !== JSON.stringify(e.after[k]));
  if (!keys.length) return null;
  return h("ul", { class: "changes small" }, keys.map((k) => h("li", {}, `${k}: ${show(e.before?.[k])} → ${show(e.after[k])}`)));
}

const ISO_TIME = /^\d{4}-\d\d-\d\dT\d\d:\d\d/;

function show(value) {
  if (value === null || value === undefined) return "—";
  if (typeof value === "string" && ISO_TIME.test(value)) {
    return formatter({ day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" }).format(new Date(value));
  }
  return typeof value === "object" ? JSON.stringify(value) : String(value);
}

// --- helpers --------------------------------------------------------------------------------

/** Sends a form's call: its button busy meanwhile, a problem's detail next to it. `onError`
 * may take a failure over (returning true). */
async function submit(event, errorEl, send, onDone, onError = () => false) {
  event.preventDefault();
  const form = event.currentTarget;
  errorEl.textContent = "";
  markInvalid(form, null);
  await busy(form, async () => {
    try {
      onDone(await send());
    } catch (failure) {
      if (failure.status === 401) return;
      if (onError(failure)) return;
      errorEl.textContent = failure.status ? `${failure.detail} (${failure.status})` : failure.detail;
      markInvalid(form, failure);
      if (failure.problem?.allowed_actions) {
        errorEl.append(t("action.allowed", { actions: failure.problem.allowed_actions.join(", ") || t("action.allowedNone") }));
      }
    }
  });
}

async function busy(el, work) {
  const buttons = [...(el.matches("button") ? [el] : el.querySelectorAll("button"))];
  // a disabled button drops the focus to the page's start: it comes back when the work is done
  const focused = buttons.find((b) => b === document.activeElement);
  for (const b of buttons) b.disabled = true;
  el.setAttribute("aria-busy", "true");
  try {
    await work();
  } finally {
    for (const b of buttons) b.disabled = false;
    el.removeAttribute("aria-busy");
    if (focused?.isConnected) keepFocus(focused);
  }
}

/** Focuses `el` when the focus was lost (on the body: the element that had it was replaced or
 * disabled), so that a keyboard or screen-reader user goes on from the new page's heading
 * rather than from the top of the document; a focus the user put elsewhere stays. */
function keepFocus(el) {
  const now = document.activeElement;
  if (el && (!now || now === document.body)) el.focus({ preventScroll: true });
}

/** Each field and button of `form` is described by its error messages (.error, role=alert or
 * status), so that a screen reader going back to the field reads why it was refused, not only
 * when the alert is said. */
function describedByErrors(form) {
  const messages = [...form.querySelectorAll("[role=alert], [role=status]")];
  for (const message of messages) message.id ||= nextId("error");
  const ids = messages.map((m) => m.id).join(" ");
  if (!ids) return form;
  for (const control of form.querySelectorAll("input, select, textarea, button")) {
    const own = control.getAttribute("aria-describedby");
    control.setAttribute("aria-describedby", own ? `${own} ${ids}` : ids);
  }
  return form;
}

/** The fields of `form` that a 422's problem names (its `errors`, each a {field, message}: the
 * API's validation errors, the report's month) are marked aria-invalid, each with its message
 * under it and tied to it (aria-describedby, before the form's own), so that a screen reader on
 * the field hears what is wrong with it. Any other refusal (or none: `failure` null) clears
 * the marks. */
function markInvalid(form, failure) {
  for (const message of form.querySelectorAll(".field-error")) {
    const control = form.querySelector(`[aria-describedby~="${message.id}"]`);
    if (control) {
      const rest = control.getAttribute("aria-describedby").split(" ").filter((id) => id !== message.id);
      control.setAttribute("aria-describedby", rest.join(" "));
      control.removeAttribute("aria-invalid");
    }
    message.remove();
  }
  const errors = failure?.status === 422 && Array.isArray(failure.problem?.errors) ? failure.problem.errors : [];
  for (const e of errors) {
    const name = typeof e?.field === "string" ? e.field.split(".")[0] : "";
    const control = name && [...form.querySelectorAll("input, select, textarea")].find((c) => c.name === name);
    if (!control || control.getAttribute("aria-invalid") === "true") continue;
    const message = h("p", { class: "error field-error", id: nextId("invalid") }, String(e.message ?? ""));
    (control.closest(".field") || control).after(message);
    control.setAttribute("aria-invalid", "true");
    const own = control.getAttribute("aria-describedby");
    control.setAttribute("aria-describedby", own ? `${message.id} ${own}` : message.id);
  }
}

/** A language code for a lang attribute (a post's, a reply's), or null when it is not one. */
function langOf(code) {
  return typeof code === "string" && /^[a-z]{2,3}(-[A-Za-z0-9]{1,8})*$/.test(code) ? code : null;
}

function field(label, input) {
  const id = input.id || nextId(input.name || "f");
  input.id = id;
  return h("div", { class: "field" }, h("label", { for: id }, label), input);
}

function externalLink(url, text) {
  return h("a", { href: url, rel: "noopener noreferrer", target: "_blank" }, text || url);
}

function clip(text, length) {
  return text.length > length ? `${text.slice(0, length - 1)}…` : text;
}

function formatter(options) {
  try {
    return new Intl.DateTimeFormat(locale(), { timeZone: state.city.time_zone, ...options });
  } catch {
    return new Intl.DateTimeFormat(locale(), options);
  }
}

function clock(date) {
  return formatter({ hour: "2-digit", minute: "2-digit", second: "2-digit" }).format(date);
}

/** A due time as a <time>: the date in the city's time zone, and how far it is from now. */
function when(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  const text = formatter({ weekday: "short", day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" }).format(date);
  return h("time", { datetime: iso, title: `${state.city.time_zone}` }, `${text} (${relative(date)})`);
}

function relative(date) {
  const minutes = Math.round((date.getTime() - Date.now()) / 60000);
  const size = Math.abs(minutes);
  const words = new Intl.RelativeTimeFormat(locale(), { numeric: "always", style: "short" });
  if (size < 60) return words.format(minutes, "minute");
  return size < 48 * 60 ? words.format(Math.round(minutes / 60), "hour") : words.format(Math.round(minutes / 1440), "day");
}

function showFatal(error) {
  replace(main(), h("p", { class: "error", role: "alert" }, t("fatal", { detail: error.detail || error })));
}

start();
