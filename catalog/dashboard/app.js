// Marina dashboard: a single page on the REST API. Every user-supplied string
// reaches the page through textContent or attribute setters, never as HTML.
"use strict";

const app = document.getElementById("app");
const flash = document.getElementById("flash");
let token = sessionStorage.getItem("marina-token") || "";
let stream = null; // the environment page's event stream
let taskSource = null; // the task panel's event stream
let logFollow = null; // aborts the log panel's open log stream
let nextMessage = ""; // shown once by the next page (route clears the flash)

// -- helpers ----------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function show(...nodes) {
  app.replaceChildren(...nodes);
}

function say(message) {
  flash.textContent = message;
  flash.hidden = !message;
}

class ApiError extends Error {
  constructor(status, payload) {
    super(payload && payload.message ? payload.message : `HTTP ${status}`);
    this.status = status;
    this.payload = payload || {};
  }
}

// `raw` sends bytes as they are (an imported file); `adminOnly` marks a route
// whose 401 means "not an admin token" rather than "log in again".
async function api(method, path, body, { raw, adminOnly } = {}) {
  const options = { method, headers: { Authorization: `Bearer ${token}` } };
  if (raw !== undefined) {
    options.headers["Content-Type"] = "application/octet-stream";
    options.body = raw;
  } else if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  let reply;
  try {
    reply = await fetch(path, options);
  } catch (err) {
    throw new ApiError(0, { message: "The Marina API cannot be reached." });
  }
  const kind = reply.headers.get("Content-Type") || "";
  const payload = kind.includes("application/json") ? await reply.json() : await reply.blob();
  if (reply.status === 401) {
    const notAdmin = adminOnly && /admin/.test((payload && payload.message) || "");
    if (!notAdmin) logout("Your token was not accepted; log in again.");
    throw new ApiError(401, payload);
  }
  if (!reply.ok) throw new ApiError(reply.status, payload);
  return payload;
}

function safeUrl(text) {
  try {
    const url = new URL(text);
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  } catch (err) {
    return null;
  }
}

function time(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleTimeString() : "";
}

// Tasks' badges are styled apart: a running task is work in progress, a
// running pod is healthy.
function stateBadge(state, kind) {
  return el("span", { class: `state ${kind || ""} ${state || ""}`, text: state || "unknown" });
}

function listed(words, last = "and") {
  return words.length < 2 ? words.join("") : `${words.slice(0, -1).join(", ")} ${last} ${words.at(-1)}`;
}

// Keeps keyboard focus on "the same" control when live updates re-render a region.
function rerender(region, build) {
  const active = document.activeElement;
  const key = region.contains(active) && active.dataset ? active.dataset.key : null;
  build();
  if (key) {
    const again = [...region.querySelectorAll("[data-key]")].find((n) => n.dataset.key === key);
    if (again) again.focus({ preventScroll: true });
  }
}

// -- JSON-Schema rules in words ---------------------------------------------
// The server names the field and quotes jsonschema's message, which for a
// pattern is the raw regular expression: the schema of the field says it in words.

const CLASS_WORDS = { "a-z": "lower-case letters", "A-Z": "upper-case letters", "0-9": "digits",
                      "\\d": "digits", "\\w": "letters, digits and \"_\"", "\\s": "spaces" };

// A pattern as {min, max, chars, first, last} (character descriptions as
// arrays of words), or null when it uses more than classes, groups and counts.
function parsePattern(pattern) {
  if (typeof pattern !== "string" || !pattern.startsWith("^") || !pattern.endsWith("$")) return null;
  const text = pattern.slice(1, -1);
  let at = 0;
  function charClass() { // at is just past "["
    const words = [];
    if (text[at] === "^") return null;
    while (at < text.length && text[at] !== "]") {
      const two = text.slice(at, at + 2);
      const three = text.slice(at, at + 3);
      if (CLASS_WORDS[three]) { words.push(CLASS_WORDS[three]); at += 3; }
      else if (CLASS_WORDS[two]) { words.push(CLASS_WORDS[two]); at += 2; }
      else if (text[at] === "\\") { words.push(`"${text[at + 1]}"`); at += 2; }
      else if (text[at + 1] === "-" && text[at + 2] && text[at + 2] !== "]") {
        words.push(`"${text[at]}" to "${text[at + 2]}"`); at += 3;
      } else { words.push(`"${text[at]}"`); at += 1; }
    }
    if (text[at] !== "]") return null;
    at += 1;
    return words;
  }
  function count() {
    const rest = text.slice(at);
    let match;
    if (rest[0] === "?") { at += 1; return [0, 1]; }
    if (rest[0] === "*") { at += 1; return [0, Infinity]; }
    if (rest[0] === "+") { at += 1; return [1, Infinity]; }
    if ((match = /^\{(\d+)(,(\d*))?\}/.exec(rest))) {
      at += match[0].length;
      const low = Number(match[1]);
      return [low, match[2] === undefined ? low : match[3] === "" ? Infinity : Number(match[3])];
    }
    return [1, 1];
  }
  function sequence() {
    const atoms = [];
    while (at < text.length && text[at] !== ")") {
      let atom;
      const c = text[at];
      if (c === "[") { at += 1; const words = charClass(); if (!words) return null; atom = { words }; }
      else if (c === "(") {
        at += text.startsWith("(?:", at) ? 3 : 1;
        const inner = sequence();
        if (!inner || text[at] !== ")") return null;
        at += 1;
        atom = { inner };
      } else if (c === "\\" && CLASS_WORDS[text.slice(at, at + 2)]) {
        atom = { words: [CLASS_WORDS[text.slice(at, at + 2)]] }; at += 2;
      } else if (c === "\\") { atom = { words: [`"${text[at + 1]}"`] }; at += 2; }
      else if ("|.^$*+?{".includes(c)) return null;
      else { atom = { words: [`"${c}"`] }; at += 1; }
      [atom.low, atom.high] = count();
      atoms.push(atom);
    }
    return atoms;
  }
  const atoms = sequence();
  if (!atoms || at !== text.length) return null;
  const measure = (seq) => seq.reduce(([lo, hi], a) => {
    const [ilo, ihi] = a.inner ? measure(a.inner) : [1, 1];
    return [lo + a.low * ilo, hi + a.high * ihi];
  }, [0, 0]);
  const chars = (seq) => seq.flatMap((a) => (a.inner ? chars(a.inner) : a.words));
  const edge = (seq, fromEnd) => { // characters that can come first (or last)
    const words = [];
    for (const a of fromEnd ? [...seq].reverse() : seq) {
      words.push(...(a.inner ? edge(a.inner, fromEnd) : a.words));
      if (a.low > 0 && (!a.inner || measure(a.inner)[0] > 0)) break;
    }
    return words;
  };
  const unique = (words) => [...new Set(words)];
  const [min, max] = measure(atoms);
  return { min, max, chars: unique(chars(atoms)), first: unique(edge(atoms, false)),
           last: unique(edge(atoms, true)) };
}

function patternInWords(prop) {
  // The package's own words first; a pattern put in words only when it has none.
  const given = [prop["x-error"], prop.errorMessage].find((m) => typeof m === "string" && m.trim());
  if (given) return given;
  const parsed = parsePattern(prop.pattern);
  if (!parsed) return prop.description ? `must be ${prop.description}` : "must match the expected format";
  const { min, max, chars, first, last } = parsed;
  const length = max === Infinity ? `at least ${min}` : min === max ? `exactly ${min}` : `${min} to ${max}`;
  const parts = [`must be ${length} character${max === 1 ? "" : "s"} from ${listed(chars)}`];
  const same = (a, b) => a.length === b.length && a.every((w) => b.includes(w));
  if (!same(first, chars) && !same(last, chars) && same(first, last)) {
    parts.push(`starting and ending with ${listed(first, "or")}`);
  } else {
    if (!same(first, chars)) parts.push(`starting with ${listed(first, "or")}`);
    if (!same(last, chars)) parts.push(`ending with ${listed(last, "or")}`);
  }
  return parts.join(", ");
}

const TYPE_WORDS = { integer: "a whole number", number: "a number", string: "text",
                     boolean: "yes or no", object: "a JSON object", array: "a JSON list" };

// One server problem's rule as a sentence about the field.
function ruleInWords(rule, prop) {
  const text = String(rule);
  const schema = prop || {};
  let match;
  if (/ does not match /.test(text)) return patternInWords(schema);
  if ((match = /is greater than or equal to the maximum of (\S+)/.exec(text))) return `must be less than ${match[1]}`;
  if ((match = /is less than or equal to the minimum of (\S+)/.exec(text))) return `must be more than ${match[1]}`;
  if ((match = /is greater than the maximum of (\S+)/.exec(text))) return `must be at most ${match[1]}`;
  if ((match = /is less than the minimum of (\S+)/.exec(text))) return `must be at least ${match[1]}`;
  if (/is too long|is expected to be empty/.test(text)) {
    return schema.maxLength !== undefined ? `must be at most ${schema.maxLength} characters long` : "is too long";
  }
  if (/is too short|should be non-empty/.test(text)) {
    return schema.minLength ? `must be at least ${schema.minLength} character${schema.minLength === 1 ? "" : "s"} long` : "must not be empty";
  }
  if ((match = /is not of type '(\w+)'/.exec(text))) return `must be ${TYPE_WORDS[match[1]] || match[1]}`;
  if (/is not one of /.test(text) && Array.isArray(schema.enum)) {
    return `must be one of ${listed(schema.enum.map((v) => JSON.stringify(v)), "or")}`;
  }
  if (/is not a multiple of (\S+)/.test(text)) return `must be a multiple of ${schema.multipleOf}`;
  if (schema.pattern && text.includes(schema.pattern)) return patternInWords(schema);
  return text;
}

// -- forms from JSON Schema -------------------------------------------------

function orderedProperties(schema, order) {
  const props = (schema && schema.properties) || {};
  const names = (Array.isArray(order) ? order : []).filter((n) => n in props);
  for (const name of Object.keys(props)) if (!names.includes(name)) names.push(name);
  return names.map((name) => [name, props[name]]);
}

function schemaForm(schema, { idPrefix, submitLabel, onSubmit, values, order }) {
  const required = new Set((schema && schema.required) || []);
  const form = el("form", { novalidate: true });
  const errors = {};
  const inputs = {};
  for (const [name, prop] of orderedProperties(schema, order)) {
    const id = `${idPrefix}-${name}`;
    const label = el("label", { for: id, class: required.has(name) ? "required" : null,
                                text: prop.title || name });
    let input;
    const initial = values && name in values ? values[name] : prop.default;
    if (Array.isArray(prop.enum)) {
      input = el("select", { id, name },
        prop.enum.map((choice) => el("option", { value: JSON.stringify(choice),
                                                  text: String(choice) })));
      if (initial !== undefined) input.value = JSON.stringify(initial);
    } else if (prop.type === "boolean") {
      input = el("input", { id, name, type: "checkbox" });
      input.checked = Boolean(initial);
    } else if (prop.type === "integer" || prop.type === "number") {
      input = el("input", { id, name, type: "number", step: prop.type === "integer" ? 1 : "any",
                            inputmode: prop.type === "integer" ? "numeric" : "decimal" });
      if (initial !== undefined) input.value = String(initial);
    } else if (prop.type === "object" || prop.type === "array") {
      input = el("textarea", { id, name });
      input.value = initial !== undefined ? JSON.stringify(initial, null, 2) : "";
    } else {
      input = el("input", { id, name, type: "text" });
      if (initial !== undefined) input.value = String(initial);
    }
    if (required.has(name)) input.setAttribute("aria-required", "true");
    inputs[name] = { input, prop };
    errors[name] = el("div", { class: "field-error", id: `${id}-error` });
    const help = prop.type === "object" || prop.type === "array"
      ? el("div", { class: "muted", id: `${id}-help`, text: "JSON" }) : null;
    input.setAttribute("aria-describedby", [help ? `${id}-help` : null, `${id}-error`].filter(Boolean).join(" "));
    form.append(el("div", { class: "field" }, label, input, help, errors[name]));
  }
  const general = el("div", { class: "field-error", role: "alert" });
  form.append(general, el("button", { type: "submit", class: "primary", text: submitLabel }));
  const fail = (name, message) => {
    errors[name].textContent = message;
    inputs[name].input.setAttribute("aria-invalid", "true");
  };
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    for (const box of Object.values(errors)) box.textContent = "";
    for (const { input } of Object.values(inputs)) input.removeAttribute("aria-invalid");
    general.textContent = "";
    const data = {};
    for (const [name, { input, prop }] of Object.entries(inputs)) {
      if (input.type === "checkbox") data[name] = input.checked;
      else if (input.tagName === "SELECT") data[name] = JSON.parse(input.value);
      else if (input.value.trim() === "") continue;
      else if (prop.type === "integer" || prop.type === "number") data[name] = Number(input.value);
      else if (prop.type === "object" || prop.type === "array") {
        try {
          data[name] = JSON.parse(input.value);
        } catch (err) {
          fail(name, "must be valid JSON");
          input.focus();
          return;
        }
      } else data[name] = input.value;
    }
    try {
      await onSubmit(data);
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      const problems = err.payload.problems || [];
      const fieldOf = (p) => String(p.field).split(".").pop();
      const rest = [];
      for (const problem of problems) {
        const name = fieldOf(problem);
        if (errors[name]) {
          const words = ruleInWords(problem.rule, inputs[name].prop);
          fail(name, errors[name].textContent ? `${errors[name].textContent}; ${words}` : words);
        } else rest.push(problem);
      }
      const placed = problems.length - rest.length;
      general.textContent = !placed || rest.length
        ? [placed ? "Some values need a change." : err.message,
           ...rest.map((p) => `${p.field}: ${ruleInWords(p.rule, null)}`)].join(" ")
        : `${placed === 1 ? "One value needs" : `${placed} values need`} a change; see the field${placed === 1 ? "" : "s"} marked.`;
      const invalid = form.querySelector("[aria-invalid=true]");
      if (invalid) invalid.focus();
    }
  });
  return form;
}

// -- confirmation of destructive actions ------------------------------------

// A modal dialog (focus stays inside, Escape cancels) whose default is Cancel.
function confirmLoss({ title, loss, confirmLabel }) {
  return new Promise((resolve) => {
    const dialog = el("dialog", { id: "confirm", "aria-labelledby": "confirm-title",
                                  "aria-describedby": "confirm-loss" },
      el("h2", { id: "confirm-title", text: title }),
      el("p", { id: "confirm-loss", text: loss }));
    const cancel = el("button", { type: "button", class: "secondary", id: "confirm-cancel",
                                  text: "Cancel", onclick: () => dialog.close("cancel") });
    const ok = el("button", { type: "button", class: "danger", id: "confirm-ok",
                              text: confirmLabel, onclick: () => dialog.close("confirm") });
    dialog.append(el("div", { class: "buttons" }, cancel, ok));
    const before = document.activeElement;
    const key = before && before.dataset ? before.dataset.key : null;
    dialog.addEventListener("close", () => {
      dialog.remove();
      // Live updates may have re-rendered the button that opened the dialog.
      const again = before && !before.isConnected && key
        ? [...document.querySelectorAll("[data-key]")].find((n) => n.dataset.key === key) : before;
      if (again && again.isConnected) again.focus({ preventScroll: true });
      resolve(dialog.returnValue === "confirm");
    });
    document.body.append(dialog);
    dialog.showModal();
    cancel.focus();
  });
}

function replicasOf(obj) {
  return (obj.replicas && obj.replicas.desired) ?? obj.spec?.replicas ?? 0;
}

// What an action would take away, in words; null for actions that lose nothing.
function lossOf(action, obj, env, args) {
  const name = obj["?"].name;
  const workers = () => (obj.nodes || []).filter((id) => {
    const node = env.objects.find((o) => o["?"].id === id);
    return node && node["?"].type === "MinionNode";
  }).length;
  const gateways = () => (obj.nodes || []).filter((id) => {
    const node = env.objects.find((o) => o["?"].id === id);
    return node && node["?"].type === "GatewayNode";
  }).length;
  const replicas = replicasOf(obj);
  switch (action.name) {
    case "scalePodDown":
      return `One of the ${replicas} replicas of pod ${name} will be stopped, with anything it keeps in memory or in its own files; it stops taking requests first.`;
    case "scalePod":
      if (args && args.replicas < replicas) {
        return `${replicas - args.replicas} of the ${replicas} replicas of pod ${name} will be stopped, with anything they keep in memory or in their own files.`;
      }
      return null;
    case "restartContainers":
      return `Every process of pod ${name} (${replicas} replica${replicas === 1 ? "" : "s"}) will be restarted: what they keep in memory and their open connections are lost.`;
    case "recreatePod":
      return `Every replica of pod ${name} will be replaced by a new one: what the old ones keep in memory or in their own files is lost.`;
    case "scaleNodesDown":
      return `One of the ${workers()} worker nodes of cluster ${name} will be removed; its pods move to other nodes and lose what they keep in memory or in their own files.`;
    case "scaleNodes":
      if (args && args.count < workers()) {
        return `${workers() - args.count} of the ${workers()} worker nodes of cluster ${name} will be removed; their pods move to other nodes and lose what they keep in memory or in their own files.`;
      }
      return null;
    case "scaleGatewaysDown":
      return `One of the ${gateways()} gateway nodes of cluster ${name} will be removed; connections through it are cut and its public address stops answering.`;
    case "scaleGateways":
      if (args && args.count < gateways()) {
        return `${gateways() - args.count} of the ${gateways()} gateway nodes of cluster ${name} will be removed; connections through them are cut.`;
      }
      return null;
    default:
      // An action the registry marks destructive that is not worded above.
      return action.destructive
        ? `${action.title} on ${name}: ${action.description} What it removes cannot be brought back.`
        : null;
  }
}

// -- pages ------------------------------------------------------------------

function loginPage() {
  const input = el("input", { id: "token", name: "token", type: "password",
                              autocomplete: "current-password", "aria-describedby": "token-error" });
  const error = el("div", { class: "field-error", id: "token-error", role: "alert" });
  const form = el("form", {},
    el("label", { for: "token", text: "Token" }), input, error,
    el("button", { type: "submit", class: "primary", text: "Log in" }));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    token = input.value.trim();
    try {
      await api("GET", "/v1/environments");
    } catch (err) {
      error.textContent = err.status === 401 ? "That token is not known." : err.message;
      return;
    }
    sessionStorage.setItem("marina-token", token);
    location.hash = "#/environments";
  });
  show(el("section", { class: "card" }, el("h1", { text: "Log in to Marina" }),
    el("p", { class: "muted", text: "Use the token `marina up` printed, or one issued for your project." }),
    form));
  input.focus();
}

function logout(message) {
  token = "";
  sessionStorage.removeItem("marina-token");
  location.hash = "#/login";
  if (message) say(message);
}

async function catalogPage() {
  const [{ packages }, { environments }] = await Promise.all([
    api("GET", "/v1/catalog/packages"), api("GET", "/v1/environments")]);
  const cards = packages.map((pkg) => {
    const holder = el("div");
    const button = el("button", { type: "button", class: "primary", "aria-expanded": "false",
                                  "aria-label": `Add to environment: ${pkg.title}`,
                                  text: "Add to environment", "data-package": pkg.name });
    button.addEventListener("click", () => {
      holder.replaceChildren(addForm(pkg, environments));
      button.setAttribute("aria-expanded", "true");
      const first = holder.querySelector("select, input, a");
      if (first) first.focus();
    });
    return el("article", { class: "card package", "data-name": pkg.name,
                           "aria-labelledby": `pkg-${pkg.name}` },
      el("h2", { id: `pkg-${pkg.name}`, text: pkg.title }),
      el("p", { class: "muted", text: `${pkg.name} ${pkg.version}` }),
      el("p", { text: pkg.description }), button, holder);
  });
  show(el("h1", { text: "Catalog" }),
    el("p", {}, "Have a docker-compose file, a Panamax template or a ZApp? ",
      el("a", { href: "#/import", text: "Import it as a package" }), "."),
    el("div", { class: "grid" }, cards));
}

function addForm(pkg, environments) {
  const envId = `env-for-${pkg.name}`;
  const select = el("select", { id: envId },
    environments.map((env) => el("option", { value: env.id, text: env.name })));
  if (!environments.length) {
    return el("p", { text: "Create an environment first." },
      " ", el("a", { href: "#/environments", text: "Environments" }));
  }
  const form = schemaForm(pkg.properties, {
    idPrefix: `prop-${pkg.name}`, submitLabel: "Add", order: pkg.ui && pkg.ui.order,
    onSubmit: async (properties) => {
      await api("POST", `/v1/environments/${encodeURIComponent(select.value)}/services`,
                { package: pkg.name, properties });
      location.hash = `#/environments/${select.value}`;
    },
  });
  form.setAttribute("aria-label", `Add ${pkg.title}`);
  form.prepend(el("label", { for: envId, text: "Environment" }), select);
  return form;
}

async function environmentsPage() {
  const { environments } = await api("GET", "/v1/environments");
  const name = el("input", { id: "new-env", name: "name", type: "text", maxlength: 80,
                             "aria-describedby": "new-env-error" });
  const error = el("div", { class: "field-error", id: "new-env-error", role: "alert" });
  const form = el("form", { "aria-label": "New environment" },
    el("label", { for: "new-env", text: "New environment" }), name,
    " ", el("button", { type: "submit", class: "primary", text: "Create" }), error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const env = await api("POST", "/v1/environments", { name: name.value });
      location.hash = `#/environments/${env.id}`;
    } catch (err) {
      const problems = (err.payload && err.payload.problems) || [];
      error.textContent = problems.length
        ? `The name ${ruleInWords(problems[0].rule, null)}` : err.message;
    }
  });
  const rows = environments.map((env) => el("tr", {},
    el("td", {}, el("a", { href: `#/environments/${env.id}`, text: env.name })),
    el("td", {}, stateBadge(env.status)), el("td", { text: time(env.updated) })));
  show(el("h1", { text: "Environments" }), el("section", { class: "card" }, form),
    rows.length
      ? el("table", { id: "environments" }, el("caption", { class: "visually-hidden", text: "Your environments" }),
        el("thead", {}, el("tr", {},
          el("th", { scope: "col", text: "Name" }), el("th", { scope: "col", text: "Status" }),
          el("th", { scope: "col", text: "Updated" }))),
        el("tbody", {}, rows))
      : el("p", { class: "muted", text: "No environments yet." }));
}

function notFoundPage(envId) {
  show(el("section", { class: "card", id: "not-found" },
    el("h1", { text: "Environment not found" }),
    el("p", {}, "There is no environment with the id ", el("code", { text: envId }),
      " in your project. It may have been deleted, or it belongs to another project."),
    el("p", {}, el("a", { href: "#/environments", text: "See your environments" }))));
  document.title = "Environment not found — Marina";
}

function environmentPage(envId, first) {
  let current = first;
  const title = el("h1", { text: first.name });
  const remove = el("button", { type: "button", class: "danger", id: "delete-environment",
                                text: "Delete environment" });
  const panel = el("section", { class: "card", id: "task-panel", hidden: true,
                                "aria-labelledby": "task-heading" });
  const tree = el("section", { class: "card tree", id: "tree", "aria-labelledby": "tree-heading" });
  const tasks = el("section", { class: "card", id: "tasks", "aria-labelledby": "tasks-heading" });
  const logPanel = el("section", { class: "card", id: "log-panel", hidden: true,
                                   "aria-labelledby": "log-heading" });
  const context = { envId, panel, logPanel, env: () => current };
  remove.addEventListener("click", () => deleteEnvironment(context));
  show(el("div", { class: "title-row" }, title, remove), panel, tree, logPanel, tasks);
  renderTree(tree, first, context);
  const url = `/v1/environments/${encodeURIComponent(envId)}/events?access_token=${encodeURIComponent(token)}`;
  stream = new EventSource(url);
  stream.addEventListener("environment", (event) => {
    current = JSON.parse(event.data);
    title.textContent = current.name;
    document.title = `${current.name} — Marina`;
    renderTree(tree, current, context);
  });
  stream.addEventListener("tasks", (event) => renderTasks(tasks, JSON.parse(event.data), context));
  stream.addEventListener("deleted", () => {
    stream.close();
    nextMessage = `Environment ${current.name} was deleted.`;
    location.hash = "#/environments";
  });
  stream.onerror = () => {
    if (stream.readyState === EventSource.CLOSED) say("Live updates stopped; reload the page.");
  };
}

async function deleteEnvironment(context) {
  const env = context.env();
  const nodes = env.objects.filter((o) => /Node$/.test(o["?"].type)).length;
  const pods = env.objects.filter((o) => o["?"].type === "KubernetesPod").map((o) => o["?"].name);
  const what = [nodes ? `its ${nodes} node${nodes === 1 ? "" : "s"}` : null,
                pods.length ? `the pod${pods.length === 1 ? "" : "s"} ${listed(pods)} with their data` : null,
                "its task history"].filter(Boolean);
  const sure = await confirmLoss({
    title: `Delete environment ${env.name}?`,
    loss: `Environment ${env.name} will be torn down: ${listed(what)} will be gone. This cannot be undone.`,
    confirmLabel: "Delete environment",
  });
  if (!sure) return;
  const { task_id } = await api("DELETE", `/v1/environments/${encodeURIComponent(context.envId)}`);
  const heading = taskHeading(`Delete environment — ${env.name}`);
  followTask(context.panel, heading, task_id);
}

function renderTree(tree, env, context) {
  const objects = Object.fromEntries(env.objects.map((o) => [o["?"].id, o]));
  const items = [];
  for (const obj of env.objects) {
    const type = obj["?"].type;
    if (type === "KubernetesCluster") {
      const nodes = obj.nodes.map((id) => objects[id]).filter(Boolean);
      items.push(el("li", { "data-object": obj["?"].name }, objectLine(obj, context),
        endpointLinks(obj.endpoints),
        el("ul", { "aria-label": `Nodes of ${obj["?"].name}` }, nodes.map((node) => el("li", { "data-object": node["?"].name },
          el("span", { class: "object-name", text: node["?"].name }), " ",
          el("span", { class: "muted", text: `${node["?"].type} ${node.address || ""}` }), " ",
          stateBadge(node.state), " ",
          el("span", { class: "steps" }, Object.entries(node.steps).map(([step, done]) =>
            el("span", { class: done ? "done" : "", text: `${done ? "✓" : "…"} ${step}`,
                         title: done ? "done" : "not done yet" }))))))));
    } else if (type === "KubernetesPod") {
      const services = obj.services && obj.services.length ? obj.services : obj.spec.services || [];
      items.push(el("li", { "data-object": obj["?"].name }, objectLine(obj, context),
        el("span", { class: "replicas",
                     text: ` replicas ${obj.replicas.ready}/${obj.replicas.desired} ready` }),
        replicaTable(obj, context),
        el("ul", { "aria-label": `Services of ${obj["?"].name}` }, services.map((s) => el("li", {
          text: `service ${s.name}: port ${s.port} → ${s.targetPort || s.port} (${s.scope || "internal"})${s.ip ? " at " + s.ip : ""}` })),
          Object.entries(obj.spec.labels || {}).map(([k, v]) => el("li", { class: "muted",
            text: `label ${k}=${v}` }))),
        // Host names and TLS from the environment's URL list; else the gateways' addresses.
        endpointLinks([(env.urls || []).filter((u) => u.pod === obj["?"].name).flatMap((u) => u.urls)]
          .map((urls) => (urls.length ? urls : obj.endpoints))[0])));
    } else if (type === "KubernetesApplication") {
      items.push(el("li", { "data-object": obj["?"].name }, objectLine(obj, context)));
    }
  }
  rerender(tree, () => tree.replaceChildren(el("h2", { id: "tree-heading", text: "Objects" }),
    items.length ? el("ul", { "aria-label": "Objects" }, items) : el("p", { class: "muted",
      text: "Nothing here yet: add an application from the catalog." })));
}

// Each replica as the engine reports it: where it runs, whether it is ready,
// how often it restarted and why it last stopped; its log opens below.
function replicaTable(pod, context) {
  const replicas = (pod.status && pod.status.replicas) || [];
  const name = pod["?"].name;
  const pending = pod.status && pod.status.pending;
  if (!replicas.length) return pending ? el("p", { class: "muted", text: `Pending: ${pending}` }) : null;
  return el("table", { class: "replica-table", "aria-label": `Replicas of ${name}` },
    pending ? el("caption", { class: "muted", text: `Pending: ${pending}` }) : null,
    el("thead", {}, el("tr", {}, ["Replica", "Node", "Ready", "Restarts", "Last reason", "Log"].map(
      (h) => el("th", { scope: "col", text: h })))),
    el("tbody", {}, replicas.map((r, index) => el("tr", { "data-replica": String(index) },
      el("th", { scope: "row", text: r.name || `${name} ${index}` }),
      el("td", { text: [r.node, r.address].filter(Boolean).join(" ") }),
      el("td", {}, el("span", { class: `state ${r.ready ? "ready" : "failed"}`,
                                text: r.ready ? "ready" : "not ready" })),
      el("td", { class: "restarts", text: String(r.restarts || 0) }),
      el("td", { class: "reason", text: r.reason || "none" }),
      el("td", {}, el("button", { type: "button", class: "secondary", "data-logs": String(index),
        "data-key": `logs:${pod["?"].id}:${index}`, "aria-label": `Show the log of ${name} replica ${index}`,
        text: "Log", onclick: () => followLog(context, pod, index) }))))));
}

function stopLog() {
  if (logFollow) {
    logFollow.abort();
    logFollow = null;
  }
}

const LOG_KEEP = 200000; // characters of a followed log kept on the page

// The log panel follows one replica's output (the last lines, then more as
// they come) until it is closed or the page changes.
async function followLog(context, pod, index) {
  stopLog();
  const { logPanel, envId } = context;
  const name = pod["?"].name;
  const heading = el("h2", { id: "log-heading", tabindex: "-1", text: `Log of ${name}, replica ${index}` });
  const status = el("p", { id: "log-status", role: "status", "aria-live": "polite", text: "Connecting…" });
  const log = el("pre", { class: "log", id: "pod-log", tabindex: "0", role: "log",
                          "aria-label": `Log of ${name} replica ${index}` });
  const close = el("button", { type: "button", class: "secondary", id: "log-close", text: "Close the log" });
  const controller = new AbortController();
  logFollow = controller;
  close.addEventListener("click", () => {
    stopLog();
    logPanel.hidden = true;
    logPanel.replaceChildren();
    const again = document.querySelector(`[data-key="logs:${pod["?"].id}:${index}"]`);
    if (again) again.focus();
  });
  logPanel.replaceChildren(el("div", { class: "title-row" }, heading, close), status, log);
  logPanel.hidden = false;
  heading.focus();
  const path = `/v1/environments/${encodeURIComponent(envId)}/pods/${encodeURIComponent(pod["?"].id)}`
    + `/logs?replica=${index}&tail=200&follow=1`;
  try {
    const reply = await fetch(path, { headers: { Authorization: `Bearer ${token}` },
                                      signal: controller.signal });
    if (!reply.ok) {
      const kind = reply.headers.get("Content-Type") || "";
      const payload = kind.includes("application/json") ? await reply.json() : {};
      status.textContent = `The log cannot be shown: ${payload.message || `HTTP ${reply.status}`}`;
      return;
    }
    status.textContent = "Following: new lines appear as the replica writes them.";
    const reader = reply.body.getReader();
    const decoder = new TextDecoder();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      const text = log.textContent + decoder.decode(value, { stream: true });
      log.textContent = text.length > LOG_KEEP ? text.slice(-LOG_KEEP) : text;
      log.scrollTop = log.scrollHeight;
    }
    status.textContent = "The log ended: the replica stopped or was replaced.";
  } catch (err) {
    if (err.name === "AbortError") return;
    status.textContent = "The log stream was cut; open it again.";
  } finally {
    if (logFollow === controller) logFollow = null;
  }
}

function endpointLinks(endpoints) {
  const links = (endpoints || []).map(safeUrl).filter(Boolean);
  if (!links.length) return null;
  return el("div", { class: "endpoints" }, "Public: ",
    links.map((href) => el("a", { href, class: "endpoint", target: "_blank",
                                  rel: "noopener", text: href })));
}

const REMOVABLE = ["KubernetesCluster", "KubernetesPod", "KubernetesApplication"];

function objectLine(obj, context) {
  const actions = Object.values(obj["?"]._actions || {});
  const name = obj["?"].name;
  const removable = REMOVABLE.includes(obj["?"].type);
  return el("div", {},
    el("span", { class: "object-name", text: name }), " ",
    el("span", { class: "muted", text: obj["?"].type }), " ",
    obj.state ? stateBadge(obj.state) : null,
    el("div", { class: "actions", role: "group", "aria-label": `Actions of ${name}` },
      actions.map((action) => el("button", {
        type: "button", class: "action", title: action.description, "data-action": action.name,
        "data-key": `${obj["?"].id}:${action.name}`,
        "aria-label": `${action.title}: ${name}`, text: action.title,
        onclick: () => openAction(context, obj, action) })),
      removable ? el("button", { type: "button", class: "danger", "data-remove": name,
        "data-key": `${obj["?"].id}:remove`, "aria-label": `Remove ${name}`, text: "Remove",
        onclick: () => removeObject(context, obj).catch((err) => say(err.message)) }) : null));
}

// What removing an object takes away, in words.
function removalLoss(obj, env) {
  const name = obj["?"].name;
  const byId = (id) => env.objects.find((o) => o["?"].id === id);
  if (obj["?"].type === "KubernetesCluster") {
    const nodes = (obj.nodes || []).length;
    return `Cluster ${name} and its ${nodes} node${nodes === 1 ? "" : "s"} will be removed. Applications and pods still on it must be removed first.`;
  }
  if (obj["?"].type === "KubernetesApplication") {
    const pods = (obj.pods || []).map(byId).filter(Boolean).map((p) => p["?"].name);
    return `Application ${name} will be removed with its pod${pods.length === 1 ? "" : "s"} ${listed(pods)}: every replica stops, with what it keeps in memory or in its own files, and its services and public addresses go away.`;
  }
  const replicas = replicasOf(obj);
  return `Pod ${name} will be removed: its ${replicas} replica${replicas === 1 ? " stops" : "s stop"}, with what they keep in memory or in their own files, and its services and public addresses go away.`;
}

async function removeObject(context, obj) {
  const name = obj["?"].name;
  const sure = await confirmLoss({ title: `Remove ${name}?`, loss: removalLoss(obj, context.env()),
                                   confirmLabel: `Remove ${name}` });
  if (!sure) return;
  const { task_id } = await api("DELETE",
    `/v1/environments/${encodeURIComponent(context.envId)}/objects/${encodeURIComponent(obj["?"].id)}`);
  followTask(context.panel, taskHeading(`Remove — ${name}`), task_id);
}

function taskHeading(text) {
  return el("h2", { id: "task-heading", tabindex: "-1", text });
}

async function openAction(context, obj, action) {
  const { panel, envId } = context;
  const heading = taskHeading(`${action.title} — ${obj["?"].name}`);
  const description = el("p", { class: "muted", text: action.description });
  const run = async (args) => {
    const loss = lossOf(action, obj, context.env(), args);
    if (loss && !(await confirmLoss({ title: `${action.title} — ${obj["?"].name}?`, loss,
                                      confirmLabel: action.title }))) return;
    const { task_id } = await api("POST",
      `/v1/environments/${encodeURIComponent(envId)}/actions/${encodeURIComponent(action.id)}`, args);
    followTask(panel, heading, task_id);
  };
  const hasArgs = Object.keys((action.schema && action.schema.properties) || {}).length > 0;
  if (hasArgs) {
    closeTaskSource();
    panel.hidden = false;
    panel.replaceChildren(heading, description, schemaForm(action.schema, {
      idPrefix: `arg-${action.id}`, submitLabel: "Run", onSubmit: run }));
    panel.querySelector("input, select, textarea").focus();
  } else {
    run({}).catch((err) => say(err.message));
  }
}

function closeTaskSource() {
  if (taskSource) {
    taskSource.close();
    taskSource = null;
  }
}

// The panel follows one task: its state, a live progress line for screen
// readers, the log, then the outcome and files.
function followTask(panel, heading, taskId) {
  closeTaskSource();
  panel.hidden = false;
  const state = el("p", { id: "task-state" }, "Task ", el("code", { text: taskId }), " ",
                   stateBadge("queued", "task"));
  const progress = el("p", { id: "task-progress", role: "status", "aria-live": "polite",
                             "aria-atomic": "true", text: "Waiting for a worker…" });
  const log = el("pre", { class: "log", id: "task-log", tabindex: "0", role: "log",
                          "aria-label": "Task log" });
  const result = el("div", { id: "task-result" });
  panel.replaceChildren(heading, state, progress, log, result);
  heading.focus({ preventScroll: false });
  let lines = 0;
  const source = new EventSource(
    `/v1/tasks/${encodeURIComponent(taskId)}/events?access_token=${encodeURIComponent(token)}`);
  taskSource = source;
  source.addEventListener("log", (event) => {
    const line = JSON.parse(event.data);
    lines += 1;
    log.append(`${time(line.time)} ${line.level} ${line.message}\n`);
    log.scrollTop = log.scrollHeight;
    progress.textContent = `Step ${lines}: ${line.message}`;
  });
  source.addEventListener("task", (event) => {
    const task = JSON.parse(event.data);
    state.replaceChildren("Task ", el("code", { text: taskId }), " ",
      el("span", { class: "muted", text: `${task.method} ` }), stateBadge(task.state, "task"));
    if (task.state === "running" && lines === 0) progress.textContent = "Running…";
    if (task.state === "succeeded" || task.state === "failed") {
      progress.textContent = task.state === "failed" ? `Failed after ${lines} log lines.`
        : `Finished after ${lines} log lines.`;
      showResult(result, task);
    }
  });
  source.addEventListener("done", () => source.close());
  source.onerror = () => source.close();
}

function showResult(result, task) {
  const outcome = task.state === "failed" ? "failed" : task.outcome;
  const text = task.state === "failed" ? `Failed: ${task.error}`
    : `${task.outcome === "noop" ? "Nothing changed" : "Changed"}${task.reason ? ": " + task.reason : ""}`;
  result.replaceChildren(el("p", { class: `outcome ${outcome}`, text }),
    ...(task.files || []).map((name) => el("button", {
      type: "button", class: "secondary download", "data-file": name, text: `Download ${name}`,
      onclick: () => download(task.id, name) })));
}

async function download(taskId, name) {
  const blob = await api("GET", `/v1/tasks/${taskId}/files/${encodeURIComponent(name)}`);
  const link = el("a", { href: URL.createObjectURL(blob), download: name });
  document.body.append(link);
  link.click();
  link.remove();
}

function renderTasks(box, tasks, context) {
  const objectName = (id) => {
    const obj = context.env().objects.find((o) => o["?"].id === id);
    return obj ? obj["?"].name : context.env().name;
  };
  rerender(box, () => box.replaceChildren(el("h2", { id: "tasks-heading", text: "Recent tasks" }), tasks.length
    ? el("table", {}, el("thead", {}, el("tr", {}, ["Action", "State", "Outcome", "Started"].map(
        (h) => el("th", { scope: "col", text: h })))),
      el("tbody", {}, tasks.map((t) => el("tr", { "data-task": t.id },
        el("td", {}, el("button", { type: "button", class: "link", "data-key": `task:${t.id}`,
          "aria-label": `${t.method} of ${objectName(t.object)}: show log and result`,
          text: t.method,
          onclick: () => followTask(context.panel, taskHeading(`${t.method} — ${objectName(t.object)}`), t.id) })),
        el("td", {}, stateBadge(t.state, "task")),
        el("td", { text: t.state === "failed" ? t.error : [t.outcome, t.reason].filter(Boolean).join(": ") }),
        el("td", { text: time(t.created) })))))
    : el("p", { class: "muted", text: "No tasks yet." })));
}

// -- import of foreign formats ----------------------------------------------

const FORMATS = [["", "Detect from the file"], ["compose", "docker-compose file"],
                 ["pmx", "Panamax template (.pmx)"], ["zapp", "Zoe application (ZApp, JSON)"]];

async function importPage() {
  const intro = el("p", { class: "muted",
    text: "A docker-compose file, a Panamax template or a Zoe application becomes a catalog package. You see the package and every field that does not carry over before anything is saved." });
  show(el("h1", { text: "Import an application" }), intro);
  try {
    // Only an admin token may import; asking with an empty dry run tells, and saves nothing.
    await api("POST", "/v1/packages/import?dry_run=true&filename=check", undefined,
              { raw: new Uint8Array(0), adminOnly: true });
  } catch (err) {
    if (err.status === 401) {
      app.append(el("section", { class: "card", id: "import-refused" },
        el("h2", { text: "Importing needs an admin token" }),
        el("p", { text: "You are logged in with a project token. Importing adds a package to the catalog every project shares, so only the admin token that `marina up` printed can do it. Log in with that token, or ask its holder to import the file." })));
      return;
    }
  }
  const file = el("input", { id: "import-file", name: "file", type: "file", required: true,
                             accept: ".yml,.yaml,.pmx,.json,.zapp", "aria-describedby": "import-file-help" });
  const format = el("select", { id: "import-format", name: "format" },
    FORMATS.map(([value, text]) => el("option", { value, text })));
  const name = el("input", { id: "import-name", name: "name", type: "text",
                             "aria-describedby": "import-name-help" });
  const problems = el("div", { id: "import-problems", role: "alert" });
  const result = el("section", { id: "import-result", "aria-labelledby": "import-result-heading", hidden: true });
  const form = el("form", { id: "import-form", "aria-label": "File to import" },
    el("label", { for: "import-file", class: "required", text: "File" }), file,
    el("div", { class: "muted", id: "import-file-help",
                text: "docker-compose YAML, a .pmx template or a ZApp JSON file, at most 512 KiB." }),
    el("label", { for: "import-format", text: "Format" }), format,
    el("label", { for: "import-name", text: "Package name (optional)" }), name,
    el("div", { class: "muted", id: "import-name-help", text: "Taken from the file when left empty." }),
    el("div", {}, el("button", { type: "submit", class: "primary", text: "Preview" })),
    problems);
  const reset = () => { result.hidden = true; result.replaceChildren(); };
  for (const input of [file, format, name]) input.addEventListener("change", reset);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    problems.replaceChildren();
    reset();
    if (!file.files.length) {
      problems.append(el("p", { class: "field-error", text: "Choose a file to import." }));
      file.focus();
      return;
    }
    const chosen = file.files[0];
    const upload = { filename: chosen.name, format: format.value, name: name.value.trim(),
                     data: await chosen.arrayBuffer() };
    try {
      const preview = await sendImport(upload, { dryRun: true });
      showImport(result, preview, upload);
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      showImportProblems(problems, err);
    }
  });
  app.append(el("section", { class: "card" }, form), result);
}

function sendImport(upload, { dryRun, replace }) {
  const query = new URLSearchParams({ filename: upload.filename, dry_run: dryRun ? "true" : "false" });
  if (upload.format) query.set("format", upload.format);
  if (upload.name) query.set("name", upload.name);
  if (replace) query.set("replace", "true");
  return api("POST", `/v1/packages/import?${query}`, undefined, { raw: upload.data, adminOnly: true });
}

function showImportProblems(box, err) {
  const problems = err.payload.problems || [];
  box.replaceChildren(el("p", { class: "field-error",
    text: problems.length ? `The file cannot be imported; nothing was saved (${problems.length} problem${problems.length === 1 ? "" : "s"}):` : err.message }));
  if (problems.length) {
    box.append(el("ul", { class: "problems" }, problems.map((p) => el("li", {},
      p.line ? el("strong", { text: `line ${p.line}: ` }) : null,
      el("code", { text: p.field }), ` ${p.rule}`,
      p.value !== null && p.value !== undefined ? el("span", { class: "muted", text: ` (given: ${JSON.stringify(p.value)})` }) : null))));
  }
}

function showImport(result, preview, upload) {
  const pkg = preview.package;
  const pods = (pkg.manifest && pkg.manifest.template && pkg.manifest.template.pods) || [];
  const warnings = preview.warnings || [];
  const status = el("div", { id: "import-status", role: "status", "aria-live": "polite" });
  const save = el("button", { type: "button", class: "primary", id: "import-save",
                              text: `Save ${pkg.name} to the catalog` });
  // Replicas and public ports are package properties: show their defaults.
  const defaults = (pkg.properties && pkg.properties.properties) || {};
  const shown = (value) => {
    const match = /^\$\{(\w+)\}$/.exec(String(value));
    if (!match) return String(value);
    const prop = defaults[match[1]];
    return prop && prop.default !== undefined ? `${prop.default} (property ${match[1]})` : String(value);
  };
  const services = (pod) => (pod.services || []).map((s) =>
    `${s.name}: ${shown(s.port)} → ${s.targetPort || s.port} (${s.scope || "internal"})`);
  const saveAs = async (replace) => {
    status.replaceChildren("Saving…");
    try {
      const saved = await sendImport(upload, { dryRun: false, replace });
      save.hidden = true;
      status.replaceChildren(el("p", { class: "outcome changed" },
        `Saved ${saved.package.name} ${saved.package.version} to the catalog. `,
        el("a", { href: "#/catalog", text: "Open the catalog" })));
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      if (err.status === 409) {
        const replaceButton = el("button", { type: "button", class: "danger", id: "import-replace",
          text: `Replace the existing ${pkg.name}`, onclick: () => saveAs(true) });
        status.replaceChildren(el("p", { class: "field-error",
          text: `A package named ${pkg.name} is already in the catalog. Replacing it changes what new deployments of ${pkg.name} get; or go back and give another name.` }),
          replaceButton);
        replaceButton.focus();
      } else {
        const box = el("div");
        showImportProblems(box, err);
        status.replaceChildren(box);
      }
    }
  };
  save.addEventListener("click", () => saveAs(false));
  const cell = (text) => el("td", { text });
  result.replaceChildren(
    el("div", { class: "card" },
      el("h2", { id: "import-result-heading", tabindex: "-1",
                 text: `Package ${pkg.name} ${pkg.version} (preview, not saved)` }),
      el("p", { text: pkg.description }),
      el("p", { class: "muted", text: `Read as: ${(FORMATS.find(([v]) => v === preview.format) || [0, preview.format])[1]}` }),
      el("h3", { text: `Pods (${pods.length})` }),
      el("table", { id: "import-pods" },
        el("thead", {}, el("tr", {}, ["Pod", "Containers", "Replicas", "Services"].map(
          (h) => el("th", { scope: "col", text: h })))),
        el("tbody", {}, pods.map((pod) => el("tr", { "data-pod": pod.name },
          el("th", { scope: "row", text: pod.name }),
          cell((pod.containers || []).map((c) => `${c.name}${c.image ? ` (${c.image})` : ""}`).join(", ")),
          cell(shown(pod.replicas)),
          cell(services(pod).join("; ") || "none"))))),
      el("h3", { id: "import-warnings-heading", text: warnings.length
        ? `Warnings (${warnings.length}): what does not carry over` : "No warnings: every field carried over" }),
      warnings.length ? el("table", { id: "import-warnings", "aria-labelledby": "import-warnings-heading" },
        el("thead", {}, el("tr", {}, ["File", "Field (JSON pointer)", "Code", "Reason"].map(
          (h) => el("th", { scope: "col", text: h })))),
        el("tbody", {}, warnings.map((w) => el("tr", { "data-pointer": w.pointer, "data-code": w.code },
          cell(w.file), el("td", {}, el("code", { text: w.pointer })), cell(w.code), cell(w.reason))))) : null,
      save, status));
  result.hidden = false;
  result.querySelector("h2").focus();
}

// -- routing ----------------------------------------------------------------

const NAV = { "#/catalog": "nav-catalog", "#/environments": "nav-environments", "#/import": "nav-import" };

async function route() {
  if (stream) {
    stream.close();
    stream = null;
  }
  closeTaskSource();
  stopLog();
  say(nextMessage);
  nextMessage = "";
  document.getElementById("logout").hidden = !token;
  const hash = location.hash || "#/environments";
  for (const [prefix, id] of Object.entries(NAV)) {
    const link = document.getElementById(id);
    if (hash === prefix || hash.startsWith(`${prefix}/`)) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = "Marina";
  if (!token && hash !== "#/login") {
    location.hash = "#/login";
    return;
  }
  try {
    if (hash === "#/login") loginPage();
    else if (hash === "#/catalog") await catalogPage();
    else if (hash === "#/environments") await environmentsPage();
    else if (hash === "#/import") await importPage();
    else if (hash.startsWith("#/environments/")) {
      const envId = decodeURIComponent(hash.slice("#/environments/".length));
      let env;
      try {
        env = await api("GET", `/v1/environments/${encodeURIComponent(envId)}`);
      } catch (err) {
        if (err instanceof ApiError && err.status === 404) {
          notFoundPage(envId);
          app.focus({ preventScroll: true });
          return;
        }
        throw err;
      }
      environmentPage(envId, env);
    } else location.hash = "#/environments";
  } catch (err) {
    if (err instanceof ApiError) {
      if (err.status !== 401) say(err.message);
    } else {
      say("Something went wrong in the page; reload it.");
      console.error(err);
    }
  }
  if (hash !== "#/login") app.focus({ preventScroll: true });
}

document.getElementById("logout").addEventListener("click", () => logout(""));
window.addEventListener("hashchange", route);
window.addEventListener("unhandledrejection", (event) => {
  const err = event.reason;
  say(err instanceof ApiError ? err.message : "Something went wrong in the page; reload it.");
});
route();
