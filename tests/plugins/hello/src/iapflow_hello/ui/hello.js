// The Hello page of the iapflow-hello example plugin: say hello through the API and see the
// greetings you may read. Served as /ui/pages/hello/hello.js; the shell's modules are two
// folders up.
import { registerPage } from "../../registry.js";
import { field, formatDate, h, reload, run, statusLine, table } from "../../ui.js";

async function greetings(api) {
  const reply = await api.call("query", {
    collectionname: "greetings",
    query: { _type: "greeting" },
    orderby: { _created: -1 },
    top: 10,
  });
  return reply.result || [];
}

registerPage({
  id: "hello",
  title: "Hello",
  order: 90,
  async render(ctx) {
    ctx.heading("Hello");
    const status = statusLine();
    const name = field("Name", h("input", { name: "name", autocomplete: "off" }));
    const list = h("div", {});
    const show = async () => {
      list.replaceChildren(
        table(
          [
            { title: "Name", cell: (g) => g.name },
            { title: "When", cell: (g) => formatDate(g._created) },
          ],
          await greetings(ctx.api),
          "your greetings",
        ),
      );
    };
    const button = h("button", { type: "submit" }, "Say hello");
    const form = h(
      "form",
      {
        onsubmit: (event) => {
          event.preventDefault();
          run(button, status, async () => {
            const reply = await ctx.api.call("hello", { name: name.input.value });
            await show();
            status.show(`${reply.result} (${reply.count} greetings)`);
          });
        },
      },
      name.row,
      button,
    );
    ctx.main.append(form, status, list);
    await reload(status, show);
  },
});
