// The ACL editor: one row per entry (principal, rights, deny), principal search in `users`,
// and a save callback. Whether a change is allowed is the server's decision; its refusal is
// shown as it phrased it.
import { escapeRegex, h, run, setContent, statusLine, table } from "./ui.js";

export const RIGHTS = [
  { bit: 1, name: "create" },
  { bit: 2, name: "read" },
  { bit: 4, name: "update" },
  { bit: 8, name: "delete" },
  { bit: 16, name: "invoke" },
];
export const FULL_CONTROL = 65535;

/** Find users and roles whose name or username holds `text` (what the caller may read). */
export async function searchPrincipals(api, text, top = 10) {
  const pattern = { $regex: escapeRegex(text.trim()), $options: "i" };
  const reply = await api.call("query", {
    collectionname: "users",
    query: { _type: { $in: ["user", "role"] }, $or: [{ name: pattern }, { username: pattern }] },
    projection: { name: 1, username: 1, _type: 1 },
    orderby: { name: 1 },
    top,
  });
  return reply.result || [];
}

/** A search box that lists principals; onPick({_id, name, _type}). */
export function principalSearch(api, onPick, label = "Add user or role") {
  const input = h("input", { type: "search", id: `ps-${Math.random().toString(36).slice(2, 8)}`, autocomplete: "off" });
  const results = h("ul", { class: "suggestions", "aria-live": "polite" });
  results.hidden = true;
  const status = statusLine();
  const button = h("button", { type: "submit" }, "Search");
  const form = h(
    "form",
    { class: "row principal-search" },
    h("div", { class: "field grow" }, h("label", { for: input.id }, label), input),
    button,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    run(button, status, async () => {
      const found = await searchPrincipals(api, input.value);
      results.hidden = false;
      setContent(
        results,
        found.length
          ? found.map((p) =>
              h(
                "li",
                {},
                h(
                  "button",
                  {
                    type: "button",
                    onclick: () => {
                      onPick(p);
                      results.hidden = true;
                      input.value = "";
                      input.focus();
                    },
                  },
                  `Add ${p.name || p.username} (${p._type})`,
                ),
              ),
            )
          : h("li", { class: "muted" }, `No user or role you can see matches '${input.value}'.`),
      );
    });
  });
  return h("div", {}, form, results, status);
}

/** The editor. `acl` is the current list; `save(newAcl)` stores it (throws the server's error). */
export function aclEditor(api, acl, save) {
  let entries = (acl || []).map((ace) => ({ ...ace }));
  const status = statusLine();
  const holder = h("div", {});

  function rightsCell(ace) {
    const full = ace.rights === FULL_CONTROL || ace.rights === -1;
    const boxes = RIGHTS.map((r) => {
      const box = h("input", {
        type: "checkbox",
        checked: full || (ace.rights & r.bit) === r.bit,
        "aria-label": `${r.name} for ${ace.name}`,
        onchange: () => {
          const base = full ? 31 : ace.rights || 0;
          ace.rights = box.checked ? base | r.bit : base & ~r.bit;
          draw();
        },
      });
      return h("label", { class: "right" }, box, ` ${r.name} `);
    });
    const fullBox = h("input", {
      type: "checkbox",
      checked: full,
      "aria-label": `full control for ${ace.name}`,
      onchange: () => {
        ace.rights = fullBox.checked ? FULL_CONTROL : 2;
        draw();
      },
    });
    return h("span", {}, boxes, h("label", { class: "right" }, fullBox, " full control"));
  }

  function draw() {
    const rows = table(
      [
        { title: "Principal", cell: (ace) => h("span", {}, ace.name || "", h("br"), h("code", {}, ace._id)) },
        { title: "Rights", cell: rightsCell },
        {
          title: "Deny",
          cell: (ace) => {
            const box = h("input", {
              type: "checkbox",
              checked: Boolean(ace.deny),
              "aria-label": `deny for ${ace.name}`,
              onchange: () => {
                ace.deny = box.checked;
              },
            });
            return box;
          },
        },
        {
          title: "",
          cell: (ace) =>
            h(
              "button",
              {
                type: "button",
                class: "danger",
                onclick: () => {
                  entries = entries.filter((e) => e !== ace);
                  draw();
                },
              },
              `Remove ${ace.name || ace._id}`,
            ),
        },
      ],
      entries,
      "Access control list",
    );
    rows.querySelector("table").classList.add("acl");
    setContent(holder, rows);
  }

  const saveButton = h("button", { type: "button", class: "primary" }, "Save ACL");
  saveButton.addEventListener("click", () =>
    run(saveButton, status, async () => {
      const clean = entries.map(({ _id, name, rights, deny }) => (deny ? { _id, name, rights, deny: true } : { _id, name, rights }));
      const stored = await save(clean);
      if (Array.isArray(stored)) entries = stored.map((ace) => ({ ...ace }));
      draw();
      status.show("ACL saved.", "ok");
    }),
  );
  const search = principalSearch(api, (p) => {
    if (!entries.some((e) => e._id === p._id)) entries.push({ _id: p._id, name: p.name || p.username, rights: 2 });
    draw();
  });
  draw();
  return h("div", { class: "acl-editor" }, holder, search, h("div", { class: "actions" }, saveButton), status);
}
