// The plugins the server runs (GET /-/plugins): name, version, built-in or installed, hooks.
import { registerPage } from "../registry.js";
import { h, statusLine, table } from "../ui.js";

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
            { title: "Version", cell: (p) => p.version },
            { title: "Kind", cell: (p) => (p.builtin ? "built in" : "installed") },
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
