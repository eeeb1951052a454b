// The app shell: hash router, nav, sign-in state and reconnecting. Pages live in pages/ and
// register themselves (registry.js); pages/index.js lists them.
//
// A page's render(ctx) gets:
//   ctx.api        the websocket client (api.js)
//   ctx.main       the element to build the page in (fresh for every visit)
//   ctx.params     URLSearchParams of the route (#/page?key=value)
//   ctx.navigate(page, params)  go to another route
//   ctx.onLeave(fn)             run fn when the user leaves the page (unwatch, timers)
//   ctx.heading(text)           the page's <h1>, focused for keyboard and screen reader users

import { api } from "./api.js";
import { getPage, navPages } from "./registry.js";
import { h, href, setContent } from "./ui.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const userBox = document.getElementById("user");
const banner = document.getElementById("banner");
const menuButton = document.getElementById("menu-button");

let leaving = [];
let signinNotice = "";

function parseHash() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [id, query = ""] = hash.split("?");
  return { id: id || "", params: new URLSearchParams(query) };
}

export function navigate(page, params = {}) {
  const target = href(page, params);
  if (location.hash === target) route();
  else location.hash = target;
}

function buildNav() {
  const { id } = parseHash();
  const current = (getPage(id) || {}).parent || id;
  const items = navPages().map((page) =>
    h(
      "li",
      {},
      h(
        "a",
        { href: href(page.id), "aria-current": page.id === current ? "page" : false, class: page.placeholder ? "soon" : false },
        page.title,
      ),
    ),
  );
  setContent(nav, api.user ? h("ul", {}, items) : null);
  setContent(
    userBox,
    api.user
      ? [
          h("span", { class: "who", title: api.user.username }, api.user.name || api.user.username),
          api.user.impostor
            ? h("button", { type: "button", id: "unimpersonate", onclick: stopImpersonating }, "Stop impersonating")
            : null,
          h("button", { type: "button", id: "signout", onclick: signout }, "Sign out"),
        ]
      : null,
  );
}

function signout() {
  api.signout();
  signinNotice = "Signed out.";
  navigate("signin");
}

async function stopImpersonating() {
  try {
    await api.stopImpersonating();
    navigate(firstPage());
  } catch (err) {
    banner.textContent = err.message;
    banner.hidden = false;
  }
}

function firstPage() {
  const pages = navPages().filter((p) => !p.placeholder);
  return pages.length ? pages[0].id : "signin";
}

async function route() {
  for (const fn of leaving) {
    try {
      await fn();
    } catch {
      // leaving never fails the next page
    }
  }
  leaving = [];
  let { id, params } = parseHash();
  if (!id) id = api.user ? firstPage() : "signin";
  let page = getPage(id);
  if (!page) {
    page = { title: "Not found", render: (ctx) => ctx.main.append(h("p", {}, `There is no page '${id}'.`)) };
  }
  if (!page.public && !api.user) {
    const next = location.hash && !location.hash.startsWith("#/signin") ? location.hash : "";
    navigate("signin", { next });
    return;
  }
  nav.classList.remove("open");
  menuButton.setAttribute("aria-expanded", "false");
  buildNav();
  const section = h("section", { class: "page", "data-page": id });
  setContent(main, section);
  document.title = `${page.title} · iapflow`;
  const ctx = {
    api,
    main: section,
    params,
    navigate,
    onLeave: (fn) => leaving.push(fn),
    heading: (text) => {
      const heading = h("h1", { tabindex: "-1" }, text);
      section.prepend(heading);
      heading.focus({ preventScroll: true });
      return heading;
    },
    notice: () => {
      const text = signinNotice;
      signinNotice = "";
      return text;
    },
    home: firstPage,
  };
  try {
    await page.render(ctx);
  } catch (err) {
    section.append(h("p", { class: "status error", role: "alert" }, err.message || String(err)));
  }
}

async function reconnect(detail) {
  const why = detail.reason ? `: ${detail.reason}` : "";
  let delay = 500;
  for (;;) {
    banner.textContent = `Connection lost (code ${detail.code}${why}). Reconnecting…`;
    banner.hidden = false;
    try {
      await api.connect();
      break;
    } catch {
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 10000);
    }
  }
  banner.hidden = true;
  try {
    await api.resume();
  } catch (err) {
    api.user = null;
    signinNotice = err.message;
  }
  if (!api.user) signinNotice = signinNotice || `Signed out: connection closed (code ${detail.code}${why}).`;
  route();
}

async function start() {
  await import("./pages/index.js");
  menuButton.addEventListener("click", () => {
    const open = nav.classList.toggle("open");
    menuButton.setAttribute("aria-expanded", String(open));
  });
  // A signed-out connection that closes (the sign-in timeout) is opened again by the next call.
  api.addEventListener("close", (event) => {
    if (api.user) reconnect(event.detail);
  });
  api.addEventListener("signin", buildNav);
  try {
    await api.resume();
  } catch (err) {
    signinNotice = err.message;
  }
  window.addEventListener("hashchange", route);
  await route();
  document.body.dataset.ready = "true";
}

start();
