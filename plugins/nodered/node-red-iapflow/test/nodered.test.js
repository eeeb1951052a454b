"use strict";
// A real Node-RED started with this package's settings against a real iapflow server: editor
// and Admin API sign-in, roles to permissions, HTTP-in endpoint auth, encrypted credentials and
// flows in the nodered collection, reloading after someone else's change, and the nodes.

const { test, before, after } = require("node:test");
const assert = require("node:assert/strict");
const { Client } = require("../lib/client");
const auth = require("../auth");
const h = require("./helpers");

let admin;
let owner;
let ownerClient;
let nr;

before(async () => {
    admin = await h.adminClient();
    owner = await h.makeUser(admin, [h.ROLES.personalNoderedUsers]);
    ownerClient = new Client({ url: h.URL, jwt: owner.jwt });
    await ownerClient.connect();
    nr = await h.startNodeRed(owner);
});

after(async () => {
    if (nr) await nr.stop();
    if (ownerClient) await ownerClient.close();
    if (admin) await admin.close();
});

async function passwordLogin(username, password) {
    const res = await fetch(nr.url + "/auth/token", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        // The editor asks for scope "" (whatever the user may); "*" is refused to a reader.
        body: JSON.stringify({ client_id: "node-red-editor", grant_type: "password", scope: "", username, password }),
    });
    return { status: res.status, body: res.status === 200 ? await res.json() : await res.text() };
}

test("Node-RED loads the package's nodes for the palette", async () => {
    const res = await fetch(nr.url + "/nodes", { headers: { Authorization: "Bearer " + owner.jwt, Accept: "application/json" } });
    assert.equal(res.status, 200);
    const sets = (await res.json()).filter((set) => set.module === "node-red-iapflow");
    assert.deepEqual(sets.map((set) => set.name).sort(), ["iapflow-api", "iapflow-queue", "iapflow-workitem"]);
    for (const set of sets) {
        assert.equal(set.enabled, true, set.name);
        assert.equal(set.err, undefined, `${set.name}: ${set.err}`);
    }
    assert.deepEqual(sets.flatMap((set) => set.types).sort(), [
        "api add", "api addorupdate", "api aggregate", "api delete", "api get", "api get jwt",
        "api update", "api watch", "queue in", "queue out", "workitem add", "workitem pop", "workitem update",
    ]);
    const html = await fetch(nr.url + "/nodes", { headers: { Authorization: "Bearer " + owner.jwt, Accept: "text/html" } });
    const text = await html.text();
    for (const type of ["api get", "queue in", "workitem pop"]) {
        assert.ok(text.includes(`data-template-name="${type}"`), `editor template of ${type}`);
        assert.ok(text.includes(`data-help-name="${type}"`), `help of ${type}`);
    }
});

test("the editor signs in with iapflow usernames and passwords", async () => {
    const login = await h.admin(nr, "GET", "/auth/login");
    assert.equal(login.body.type, "credentials");
    const good = await passwordLogin(owner.username, "pw");
    assert.equal(good.status, 200, JSON.stringify(good.body));
    const settings = await h.admin(nr, "GET", "/settings", good.body.access_token);
    assert.equal(settings.status, 200);
    assert.deepEqual(settings.body.user.permissions, "*");
    const bad = await passwordLogin(owner.username, "wrong");
    assert.notEqual(bad.status, 200);
    const nobody = await passwordLogin("nosuchuser" + h.uid(), "pw");
    assert.notEqual(nobody.status, 200);
    const reader = await h.makeUser(admin, [h.ROLES.noderedUsers]);
    const readerLogin = await passwordLogin(reader.username, "pw");
    assert.equal(readerLogin.status, 200, readerLogin.body);
    const readerSettings = await h.admin(nr, "GET", "/settings", readerLogin.body.access_token);
    assert.equal(readerSettings.body.user.permissions, "read");
    const plain = await h.makeUser(admin);
    assert.notEqual((await passwordLogin(plain.username, "pw")).status, 200);
});

test("iapflow tokens work as bearer tokens, with permissions from the user's roles", async () => {
    const cases = [
        [owner, "*"],
        [await h.makeUser(admin, [h.ROLES.noderedAdmins]), "*"],
        [await h.makeUser(admin, [h.ROLES.noderedUsers]), "read"],
    ];
    for (const [user, permissions] of cases) {
        const settings = await h.admin(nr, "GET", "/settings", user.jwt);
        assert.equal(settings.status, 200, user.username);
        assert.equal(settings.body.user.permissions, permissions, user.username);
        assert.equal((await h.admin(nr, "GET", "/flows", user.jwt)).status, 200);
    }
    const adminToken = (await admin.validate({ username: h.ADMIN_USER, password: h.ADMIN_PASSWORD })).jwt;
    assert.equal((await h.admin(nr, "GET", "/settings", adminToken)).body.user.permissions, "*");
    // A reader may look but not deploy.
    const reader = cases[2][0];
    const refused = await h.admin(nr, "POST", "/flows", reader.jwt, { flows: [] });
    assert.equal(refused.status, 401);
    // Users without a Node-RED role, bad and missing tokens are refused.
    const plain = await h.makeUser(admin);
    assert.equal((await h.admin(nr, "GET", "/flows", plain.jwt)).status, 401);
    assert.equal((await h.admin(nr, "GET", "/flows", "not.a.token")).status, 401);
    assert.equal((await h.admin(nr, "GET", "/flows")).status, 401);
});

test("deployed flows and encrypted credentials are kept in the nodered collection", async () => {
    // /check calls /whoami through an http request node that signs in with Basic credentials
    // kept in Node-RED's credentials.
    const flows = [
        { id: "ct", type: "tab", label: "creds" },
        { id: "win", type: "http in", z: "ct", url: "/whoami", method: "get", wires: [["wfn"]] },
        { id: "wfn", type: "function", z: "ct", func: "msg.payload = {user: msg.req.user.username}; return msg;", outputs: 1, wires: [["wres"]] },
        { id: "wres", type: "http response", z: "ct", wires: [] },
        { id: "cin", type: "http in", z: "ct", url: "/check", method: "get", wires: [["cfn"]] },
        { id: "cfn", type: "function", z: "ct", func: "msg.url = 'http://127.0.0.1:' + msg.req.socket.localPort + '/whoami'; msg.payload = ''; return msg;", outputs: 1, wires: [["creq"]] },
        {
            id: "creq", type: "http request", z: "ct", method: "GET", ret: "obj", paytoqs: "ignore", url: "",
            authType: "basic", credentials: { user: owner.username, password: "pw" }, wires: [["cres"]],
        },
        { id: "cres", type: "http response", z: "ct", wires: [] },
    ];
    await h.deploy(nr, owner.jwt, flows);
    const check = async () => {
        const res = await fetch(nr.url + "/check", { headers: { Authorization: "Bearer " + owner.jwt }, signal: AbortSignal.timeout(20000) });
        return { status: res.status, body: await res.text() };
    };
    await h.waitFor(async () => (await check()).status !== 404, "/check served");
    assert.deepEqual(JSON.parse((await check()).body), { user: owner.username });
    const docs = await ownerClient.query("nodered", { nodered_id: nr.name });
    const flow = docs.find((d) => d._type === "flow");
    const cred = docs.find((d) => d._type === "credential");
    assert.deepEqual(JSON.parse(flow.flows).map((n) => n.id).sort(), flows.map((n) => n.id).sort());
    assert.ok(!flow.flows.includes("credentials"), "credentials are not kept with the flows");
    assert.equal(flow.deployedby, owner.username);
    assert.ok(cred, "a credential document");
    assert.ok(JSON.parse(cred.credentials).$, "Node-RED's encrypted blob");
    assert.ok(!cred.credentials.includes(owner.username), "not stored in clear");
    // A new Node-RED for the same instance (same credentialSecret) decrypts and uses them.
    await nr.stop();
    nr = await h.startNodeRed(owner, { credentialSecret: nr.credentialSecret });
    await h.waitFor(async () => (await check()).status !== 404, "/check served after the restart");
    const after = await check();
    assert.equal(after.status, 200, after.body + nr.log().slice(-2000));
    assert.deepEqual(JSON.parse(after.body), { user: owner.username });
});

test("a change to the flows made by someone else is loaded without a restart", async () => {
    await h.deploy(nr, owner.jwt, [{ id: "rt", type: "tab", label: "before" }]);
    const doc = (await admin.query("nodered", { nodered_id: nr.name, _type: "flow" }))[0];
    const edited = [{ id: "rt", type: "tab", label: "after" }, { id: "rc", type: "comment", z: "rt", name: "added elsewhere" }];
    await admin.updateOne("nodered", Object.assign({}, doc, { flows: JSON.stringify(edited) }));
    await h.waitFor(async () => {
        const now = await h.admin(nr, "GET", "/flows", owner.jwt);
        return now.body.flows.some((n) => n.id === "rc");
    }, "the edited flows in Node-RED");
    assert.match(nr.log(), /changed by admin; reloading/);
});

function endpoint(id, url, method, wires) {
    return { id, type: "http in", z: "nt", url, method: method || "post", wires: [wires] };
}
function fn(id, code, wires) {
    return { id, type: "function", z: "nt", func: code, outputs: 1, wires: [wires] };
}
const respond = (id) => ({ id, type: "http response", z: "nt", wires: [] });

/** Deploy, then wait until Node-RED serves the flow's first HTTP-in path. */
async function deployServing(flows, path) {
    await h.deploy(nr, owner.jwt, flows);
    await h.waitFor(async () => (await call(path, {}, { Authorization: "Bearer bad" })).status !== 404, `${path} served`);
}

async function call(path, body, headers) {
    let res;
    try {
        res = await fetch(nr.url + path, {
            method: "POST",
            headers: Object.assign({ "Content-Type": "application/json" }, headers || {}),
            body: JSON.stringify(body || {}),
            signal: AbortSignal.timeout(20000),
        });
    } catch (err) {
        throw new Error(`POST ${path}: ${err.message}; Node-RED's log ends:\n${nr.log().slice(-3000)}`);
    }
    const text = await res.text();
    let parsed = text;
    try { parsed = JSON.parse(text); } catch (err) { /* text */ }
    return { status: res.status, body: parsed };
}

const basic = (user, password) => ({ Authorization: "Basic " + Buffer.from(`${user}:${password}`).toString("base64") });

test("HTTP-in endpoints need iapflow credentials or a token and the api role", async () => {
    await deployServing([
        { id: "nt", type: "tab", label: "http" },
        endpoint("hin", "/hello", "post", ["hfn"]),
        fn("hfn", "msg.payload = {hello: msg.req.user.username}; return msg;", ["hout"]),
        respond("hout"),
    ], "/hello");
    assert.equal((await call("/hello")).status, 401);
    assert.equal((await call("/hello", {}, basic(owner.username, "wrong"))).status, 401);
    assert.equal((await call("/hello", {}, { Authorization: "Bearer bad" })).status, 401);
    const byBasic = await call("/hello", {}, basic(owner.username, "pw"));
    assert.equal(byBasic.status, 200);
    assert.equal(byBasic.body.hello, owner.username);
    assert.equal((await call("/hello", {}, { Authorization: "Bearer " + owner.jwt })).body.hello, owner.username);
    const apiUser = await h.makeUser(admin, [h.ROLES.noderedApiUsers]);
    assert.equal((await call("/hello", {}, { Authorization: "Bearer " + apiUser.jwt })).body.hello, apiUser.username);
    const plain = await h.makeUser(admin);
    assert.equal((await call("/hello", {}, basic(plain.username, "pw"))).status, 403);
});

test("with apiAllowAnonymous the HTTP-in middleware lets every call through", async () => {
    let passed = false;
    auth.httpNodeMiddleware({ apiAllowAnonymous: true })({ headers: {} }, {}, () => { passed = true; });
    assert.equal(passed, true);
});

test("the api nodes: add, update, addorupdate, get, aggregate, delete and get jwt", async () => {
    const marker = h.uid();
    await deployServing([
        { id: "nt", type: "tab", label: "api" },
        endpoint("cin", "/crud", "post", ["c1"]),
        fn("c1", "msg.marker = msg.payload.marker; msg.payload = {marker: msg.marker, n: 1}; return msg;", ["add"]),
        { id: "add", type: "api add", z: "nt", collection: "entities", entitytype: "nodetest", wires: [["c2"]] },
        fn("c2", "msg.added = msg.payload; msg.payload = Object.assign({}, msg.payload, {n: 2}); return msg;", ["upd"]),
        { id: "upd", type: "api update", z: "nt", collection: "entities", wires: [["c3"]] },
        fn("c3", "msg.updated = msg.payload; msg.payload = {_type: 'nodetest', marker: msg.marker, n: 3}; return msg;", ["aou"]),
        { id: "aou", type: "api addorupdate", z: "nt", collection: "entities", uniqeness: "marker", wires: [["c4"]] },
        fn("c4", "msg.upserted = msg.payload; msg.query = {marker: msg.marker}; return msg;", ["get"]),
        { id: "get", type: "api get", z: "nt", collection: "entities", wires: [["c5"]] },
        fn("c5", "msg.got = msg.payload; msg.aggregates = [{$match: {marker: msg.marker}}, {$count: 'n'}]; return msg;", ["agg"]),
        { id: "agg", type: "api aggregate", z: "nt", collection: "entities", wires: [["c6"]] },
        fn("c6", "msg.counted = msg.payload; msg.payload = msg.got[0]._id; return msg;", ["del"]),
        { id: "del", type: "api delete", z: "nt", collection: "entities", wires: [["jwt"]] },
        { id: "jwt", type: "api get jwt", z: "nt", wires: [["c7"]] },
        fn("c7", "msg.payload = {added: msg.added, updated: msg.updated, upserted: msg.upserted, got: msg.got, counted: msg.counted, deleted: msg.payload, jwt: msg.jwt, user: msg.user.username}; return msg;", ["cout"]),
        respond("cout"),
    ], "/crud");
    const reply = await call("/crud", { marker }, basic(owner.username, "pw"));
    assert.equal(reply.status, 200, JSON.stringify(reply.body));
    const r = reply.body;
    assert.equal(r.added._type, "nodetest");
    assert.equal(r.added._createdby, owner.username);
    assert.equal(r.updated.n, 2);
    assert.equal(r.upserted._id, r.added._id);
    assert.equal(r.upserted.n, 3);
    assert.equal(r.got.length, 1);
    assert.deepEqual(r.counted, [{ n: 1 }]);
    assert.equal(r.deleted, 1);
    assert.deepEqual(await ownerClient.query("entities", { marker }), []);
    assert.equal(r.user, owner.username);
    assert.equal((await admin.validate({ jwt: r.jwt })).user._id, owner.user._id);
});

test("an api node reports a refused command as a node error the flow can catch", async () => {
    await deployServing([
        { id: "nt", type: "tab", label: "errors" },
        endpoint("ein", "/bad", "post", ["bad"]),
        { id: "bad", type: "api aggregate", z: "nt", collection: "entities", aggregates: "[{\"$nosuchstage\": 1}]", wires: [[]] },
        { id: "ecatch", type: "catch", z: "nt", scope: ["bad"], uncaught: false, wires: [["efn"]] },
        fn("efn", "msg.payload = {error: msg.error.message}; return msg;", ["eout"]),
        respond("eout"),
    ], "/bad");
    const reply = await call("/bad", {}, basic(owner.username, "pw"));
    assert.equal(reply.status, 200);
    assert.match(reply.body.error, /nosuchstage/);
});

test("work item nodes: add, pop and update", async () => {
    const wiq = "nrwiq" + h.uid();
    await ownerClient.request("addworkitemqueue", { name: wiq });
    await deployServing([
        { id: "nt", type: "tab", label: "workitems" },
        endpoint("win", "/wi", "post", ["wadd"]),
        { id: "wadd", type: "workitem add", z: "nt", wiq, wires: [["wpop"]] },
        { id: "wpop", type: "workitem pop", z: "nt", wiq, wires: [["wfn"], ["wempty"]] },
        fn("wfn", "msg.payload = Object.assign({}, msg.payload, {done: true}); return msg;", ["wupd"]),
        { id: "wupd", type: "workitem update", z: "nt", state: "successful", wires: [["wout"]] },
        fn("wempty", "msg.payload = {empty: true}; return msg;", ["wout"]),
        respond("wout"),
        endpoint("pin", "/pop", "post", ["wpop2"]),
        { id: "wpop2", type: "workitem pop", z: "nt", wiq, wires: [["pout"], ["pfn"]] },
        fn("pfn", "msg.payload = {empty: true}; return msg;", ["pout"]),
        respond("pout"),
    ], "/wi");
    const reply = await call("/wi", { order: 7 }, basic(owner.username, "pw"));
    assert.equal(reply.status, 200, JSON.stringify(reply.body));
    assert.deepEqual(reply.body, { order: 7, done: true });
    const items = await ownerClient.query("workitems", { wiq });
    assert.equal(items.length, 1);
    assert.equal(items[0].state, "successful");
    assert.equal(items[0].payload.done, true);
    assert.deepEqual((await call("/pop", {}, basic(owner.username, "pw"))).body, { empty: true });
});

test("api watch sends changes; queue out sends, and waits for a reply when asked", async () => {
    const marker = h.uid();
    const outQueue = "nrwatch" + h.uid();
    const rpcQueue = "nrrpc" + h.uid();
    const watched = [];
    await ownerClient.registerQueue(outQueue, async (message) => { watched.push(message.data); });
    await ownerClient.registerQueue(rpcQueue, async (message) => {
        await ownerClient.queueMessage({
            queuename: message.replyto, correlationId: message.correlationId,
            data: { echoed: message.data.text.toUpperCase() }, striptoken: true,
        });
    });
    await deployServing([
        { id: "nt", type: "tab", label: "watch" },
        { id: "w", type: "api watch", z: "nt", collection: "entities", paths: JSON.stringify([{ $match: { marker } }]), wires: [["wf"]] },
        fn("wf", "msg.payload = {op: msg.operation, n: msg.payload.n}; return msg;", ["wq"]),
        { id: "wq", type: "queue out", z: "nt", queue: outQueue, wires: [[]] },
        endpoint("rin", "/rpc", "post", ["rq"]),
        { id: "rq", type: "queue out", z: "nt", queue: rpcQueue, rpc: true, wires: [["rout"]] },
        respond("rout"),
    ], "/rpc");
    // The watch registers once the flow starts; insert until an event arrives.
    let n = 0;
    await h.waitFor(async () => {
        await ownerClient.insertOne("entities", { _type: "watchtest", marker, n: ++n });
        await new Promise((r) => setTimeout(r, 200));
        return watched.length > 0;
    }, "a watch event sent to the queue");
    assert.equal(watched[0].op, "insert");
    const reply = await call("/rpc", { text: "hi" }, basic(owner.username, "pw"));
    assert.equal(reply.status, 200, JSON.stringify(reply.body));
    assert.deepEqual(reply.body, { echoed: "HI" });
});
