// The page registry. Each module in pages/ calls registerPage() when it is imported, and
// pages/index.js imports them all, one line per page.
//
// A page is {id, title, render(ctx), order?, nav?, public?, placeholder?}:
//   id          the route: #/<id>?key=value...
//   title       the nav label and the document title
//   render(ctx) builds the page into ctx.main (may be async); see app.js for ctx
//   order       position in the nav (smaller first; default 1000)
//   nav         false keeps it out of the nav (detail pages reached by links)
//   parent      the nav entry to mark as current on this page (a detail page's list)
//   public      true when it works signed out (the sign-in page)
//   placeholder true for a nav entry of a page not built yet: a real page with the same id
//               replaces it, whichever is imported first

const pages = new Map();

export function registerPage(page) {
  if (!page.id || !page.title || typeof page.render !== "function") {
    throw new Error("registerPage needs id, title and render");
  }
  const existing = pages.get(page.id);
  if (existing && !existing.placeholder && !page.placeholder) {
    throw new Error(`page '${page.id}' is registered twice`);
  }
  if (existing && page.placeholder) return;
  pages.set(page.id, { order: 1000, nav: true, ...page });
}

export function getPage(id) {
  return pages.get(id);
}

/** Pages for the nav, in order. */
export function navPages() {
  return [...pages.values()].filter((p) => p.nav && !p.public).sort((a, b) => a.order - b.order);
}
