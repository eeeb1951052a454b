// Connected clients (customcommand getclients) and disconnecting one (killwebsocketclient).
// Both are admins-only on the server; others see its refusal.
import { registerPage } from "../../registry.js";
import { formatDate, h, run, setContent, statusLine, table } from "../../ui.js";

registerPage({
  id: "clients",
  title: "Clients",
  order: 70,
  async render(ctx) {
    const { api } = ctx;
    ctx.heading("Clients");
    const status = statusLine();
    const refresh = h("button", { type: "button" }, "Refresh");
    const list = h("div", {});
    ctx.main.append(h("div", { class: "actions" }, refresh), status, list);
    const me = api.info ? api.info.openflow_uniqueid : "";

    async function load() {
      const reply = await api.call("customcommand", { command: "getclients" });
      const clients = reply.result || [];
      const kill = (client) => {
        const who = client.user ? client.user.username : "not signed in";
        const button = h("button", { type: "button", class: "danger", "aria-label": `Disconnect ${who} ${client.id}` }, "Disconnect");
        button.addEventListener("click", () => {
          if (!window.confirm(`Disconnect ${who} (${client.clientagent || client.protocol})?`)) return;
          run(button, status, async () => {
            await api.call("customcommand", { command: "killwebsocketclient", id: client.id });
            status.show(`Disconnected ${who}.`, "ok");
            await load();
          });
        });
        return button;
      };
      setContent(
        list,
        table(
          [
            { title: "User", cell: (c) => (c.user ? c.user.username : h("span", { class: "muted" }, "not signed in")) },
            { title: "Agent", cell: (c) => [c.clientagent, c.clientversion].filter(Boolean).join(" ") },
            { title: "Protocol", cell: (c) => c.protocol || "" },
            { title: "From", cell: (c) => c.remoteip || "" },
            { title: "Connected", cell: (c) => formatDate(c.connected) },
            { title: "Id", cell: (c) => h("code", {}, c.id, c.id === me ? " (this tab)" : "") },
            { title: "", cell: kill },
          ],
          clients,
          `${clients.length} connected client${clients.length === 1 ? "" : "s"}`,
        ),
      );
    }
    refresh.addEventListener("click", () => run(refresh, status, load));
    await run(null, status, load);
  },
});
