// The plugins the server runs (GET /-/plugins): name, distribution and version, built-in or
// installed, the backends each provides (and which the config selected), its hooks.
import { registerPage } from "../../registry.js";
import { h, statusLine, table } from "../../ui.js";

/** "storage mongo (selected), ..." for the backends a plugin provides. */
function provided(plugin) {
  const selected = plugin.selected || {};
  return Object.entries(plugin.provides || {})
    .flatMap(([kind, names]) => names.map((name) => `${kind} ${name}${selected[kind] === name ? " (selected)" : ""}`))
    .join(", ");
}

registerPage({
  id: "plugins",
  title: "Plugins",
  order: 100,
  async render(ctx) {
    ctx.heading("Plugins");
    const status = statusLine();
    ctx.main.append(status);
    try {
      const response = await fetch("/-/plugins");
      const plugins = await response.json();
      ctx.main.append(
        table(
          [
            { title: "Plugin", cell: (p) => h("code", {}, p.name) },
            { title: "Distribution", cell: (p) => `${p.dist} ${p.version}` },
            { title: "Kind", cell: (p) => (p.builtin ? "built in" : "installed") },
            { title: "Provides", cell: (p) => provided(p) },
            { title: "Hooks", cell: (p) => (p.hooks || []).join(", ") },
          ],
          plugins,
          `${plugins.length} plugins`,
        ),
      );
    } catch (err) {
      status.error(err);
    }
  },
});
