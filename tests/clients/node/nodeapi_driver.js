// Drive the official npm @openiap/nodeapi 0.0.39 client against a server; print one JSON report.
// Usage: node nodeapi_driver.js <url without credentials> <username> <password>
// Every step's outcome goes into the report; a failing step records its error and the rest go on.
const fs = require("fs");
const os = require("os");
const path = require("path");
const { openiap } = require("@openiap/nodeapi");

const [url, username, password] = process.argv.slice(2);
const report = {};

function withCredentials(base, user, pass) {
  const u = new URL(base);
  u.username = user;
  u.password = pass;
  return u.toString();
}

async function step(name, work) {
  try {
    report[name] = await Promise.race([
      work(),
      new Promise((_, reject) => setTimeout(() => reject(new Error("timeout")), 15000)),
    ]);
  } catch (err) {
    report[name] = { error: String(err && err.message ? err.message : err) };
  }
  return report[name];
}

async function main() {
  const client = new openiap(withCredentials(url, username, password));
  const user = await step("signin", () => client.connect());
  if (!user || user.error) return;
  report.signin = { username: user.username, roles: (user.roles || []).map((r) => r.name) };
  report.jwt = client.client.jwt; // the connection keeps the token, not the openiap object
  const doc = await step("insertone", () =>
    client.InsertOne({ collectionname: "nodetest", item: { name: "node one", n: 1 } }));
  await step("query", () => client.Query({ collectionname: "nodetest", query: { n: 1 } }));
  await step("count", () => client.Count({ collectionname: "nodetest", query: {} }));
  if (doc && doc._id) {
    await step("updateone", () =>
      client.UpdateOne({ collectionname: "nodetest", item: { ...doc, name: "node one!" } }));
  }
  await step("updatedocument", async () => {
    const r = await client.UpdateDocument({
      collectionname: "nodetest", query: { n: 1 }, document: { $set: { flag: true } },
    });
    return { matchedCount: r.matchedCount, modifiedCount: r.modifiedCount };
  });

  // watch, then an insert by this connection
  const events = [];
  const watchId = await step("watch", () =>
    client.Watch({ collectionname: "nodetest", paths: [] }, (operation, document) => {
      events.push([operation, document.name]);
    }));
  await step("watch_insert", () =>
    client.InsertOne({ collectionname: "nodetest", item: { name: "watched" } }));
  for (let i = 0; i < 100 && events.length === 0; i++) await new Promise((r) => setTimeout(r, 50));
  report.watchevents = events;
  if (typeof watchId === "string") await step("unwatch", () => client.UnWatch({ id: watchId }));
  if (doc && doc._id) {
    await step("deleteone", () => client.DeleteOne({ collectionname: "nodetest", id: doc._id }));
  }

  // a second connection signed in with the token serves a queue; this one calls it with rpc
  const second = new openiap(url, report.jwt);
  const jwtUser = await step("signin_jwt", () => second.connect());
  if (jwtUser && jwtUser.username) {
    report.signin_jwt = { username: jwtUser.username };
    await step("jwt_count", () => second.Count({ collectionname: "nodetest", query: {} }));
  }
  await step("registerqueue", () =>
    second.RegisterQueue({ queuename: "nodeq" }, (msg, payload, user) => ({
      echo: payload, queue: msg.queuename, sender: user ? user.username : null,
    })));
  await step("rpc", () => client.QueueMessage({ queuename: "nodeq", data: { x: 1 } }, true));

  // work items
  const pushed = await step("pushworkitem", async () => {
    const item = await client.PushWorkitem({ wiq: "nodewiq", name: "node item", payload: { a: 1 } });
    return { _id: item._id, state: item.state, payload: item.payload };
  });
  await step("popworkitem", async () => {
    const item = await client.PopWorkitem({ wiq: "nodewiq" });
    if (!item) return null;
    item.state = "successful";
    const updated = await client.UpdateWorkitem({ workitem: item });
    return { _id: item._id, state: updated.state };
  });

  // work item queues: create, change, delete
  const queue = await step("addworkitemqueue", async () => {
    const q = await client.AddWorkItemQueue({ workitemqueue: { name: "nodewiq2", maxretries: 2 } });
    return { _id: q._id, name: q.name, maxretries: q.maxretries, full: q };
  });
  if (queue && queue._id) {
    await step("updateworkitemqueue", async () => {
      const q = await client.UpdateWorkItemQueue({ workitemqueue: { ...queue.full, maxretries: 4 } });
      return { _id: q._id, name: q.name, maxretries: q.maxretries };
    });
    delete queue.full;
    await step("deleteworkitemqueue", async () => {
      await client.DeleteWorkItemQueue({ wiq: "nodewiq2" });
      return "deleted";
    });
  }

  // files: upload, then download into a temporary folder
  const folder = fs.mkdtempSync(path.join(os.tmpdir(), "nodeapi-"));
  const source = path.join(folder, "up.txt");
  fs.writeFileSync(source, "uploaded by nodeapi");
  const uploaded = await step("upload", async () => {
    const r = await client.UploadFile({ filename: source });
    return { id: r.id, filename: r.filename };
  });
  if (uploaded && uploaded.id) {
    const out = path.join(folder, "out");
    fs.mkdirSync(out);
    await step("download", async () => {
      const r = await client.DownloadFile({ id: uploaded.id, folder: out });
      return { filename: r.filename, content: fs.readFileSync(path.join(out, r.filename), "utf8") };
    });
  }

  // a refused sign-in
  const bad = new openiap(url);
  await step("connect_unsigned", async () => { await bad.connect(); return "connected"; });
  await step("signin_bad", async () => {
    const r = await bad.Signin({ username, password: "wrong password" });
    return { unexpected: r && r.user ? r.user.username : r };
  });
}

main()
  .catch((err) => { report.fatal = String(err && err.stack ? err.stack : err); })
  .finally(() => {
    process.stdout.write(JSON.stringify(report) + "\n", () => process.exit(0));
  });
