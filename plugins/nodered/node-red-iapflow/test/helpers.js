"use strict";
// Shared by the tests: the iapflow server they run against (IAPFLOW_URL, started by
// plugins/nodered/tests/test_node_package.py), users made through its API, and real Node-RED
// instances (NODE_RED_DIR: a folder with node-red installed) started with this package.

const assert = require("node:assert/strict");
const { spawn } = require("node:child_process");
const crypto = require("node:crypto");
const fs = require("node:fs");
const net = require("node:net");
const os = require("node:os");
const path = require("node:path");
const { Client } = require("../lib/client");

const URL = process.env.IAPFLOW_URL;
const ADMIN_USER = process.env.IAPFLOW_ADMIN_USER || "admin";
const ADMIN_PASSWORD = process.env.IAPFLOW_ADMIN_PASSWORD || "admin";
const NODE_RED_DIR = process.env.NODE_RED_DIR || "";

const ROLES = {
    noderedUsers: "5a23f18a2e8987292ddbe061",
    noderedAdmins: "5a17f157c4815318c8536c20",
    noderedApiUsers: "5a17f157c4815318c8536c22",
    personalNoderedUsers: "5a23f18a2e8987292ddbe062",
};

if (!URL) {
    throw new Error("IAPFLOW_URL is not set: run these tests through plugins/nodered/tests/test_node_package.py");
}

function uid() {
    return crypto.randomBytes(4).toString("hex");
}

async function adminClient() {
    const client = new Client({ url: URL, username: ADMIN_USER, password: ADMIN_PASSWORD, agent: "test" });
    await client.connect();
    return client;
}

/** Create a user with password "pw" in the given roles; returns {user, jwt, username}. */
async function makeUser(admin, roles) {
    const username = "nt" + uid();
    const created = await admin.insertOne("users", {
        _type: "user", username, name: username, newpassword: "pw",
    });
    for (const role of roles || []) {
        await admin.updateOne("users", { $push: { members: { _id: created._id, name: username } } }, { _id: role });
    }
    const reply = await admin.validate({ username, password: "pw" });
    return { username, user: reply.user, jwt: reply.jwt, password: "pw" };
}

function freePort() {
    return new Promise((resolve, reject) => {
        const server = net.createServer();
        server.listen(0, "127.0.0.1", () => {
            const { port } = server.address();
            server.close(() => resolve(port));
        });
        server.on("error", reject);
    });
}

async function waitFor(check, what, ms) {
    const deadline = Date.now() + (ms || 30000);
    let last;
    while (Date.now() < deadline) {
        try {
            last = await check();
            if (last) return last;
        } catch (err) {
            last = err;
        }
        await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`${what} did not happen (last: ${last && last.message || JSON.stringify(last)})`);
}

/**
 * Start Node-RED with this package's settings for an instance owned by `owner` ({user, jwt});
 * returns {url, name, stop(), log()}.
 */
async function startNodeRed(owner, extra) {
    assert.ok(NODE_RED_DIR, "NODE_RED_DIR (a folder with node-red installed) is not set");
    const red = path.join(NODE_RED_DIR, "node_modules", "node-red", "red.js");
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "nr-iapflow-"));
    const userDir = path.join(dir, "userdir");
    fs.mkdirSync(userDir);
    fs.writeFileSync(path.join(userDir, "package.json"), JSON.stringify({ name: "node-red-project", private: true }));
    const port = await freePort();
    const name = (extra && extra.name) || owner.username;
    const options = Object.assign({
        uiHost: "127.0.0.1", uiPort: port, url: URL, name,
        ownerId: owner.user._id, ownerName: owner.username,
        credentialSecret: "test-secret-" + uid(),
        nodesDir: path.resolve(__dirname, ".."),
        cacheSeconds: 0,
    }, extra || {});
    const settings = path.join(dir, "settings.js");
    fs.writeFileSync(settings,
        `module.exports = require(${JSON.stringify(path.resolve(__dirname, "..", "settings.js"))})(${JSON.stringify(options)});\n`);
    const out = fs.openSync(path.join(dir, "node-red.log"), "a");
    const child = spawn(process.execPath, [red, "--settings", settings, "--userDir", userDir, "--port", String(port)], {
        cwd: dir, env: Object.assign({}, process.env, { jwt: owner.jwt }), stdio: ["ignore", out, out],
    });
    const url = `http://127.0.0.1:${port}`;
    const log = () => fs.readFileSync(path.join(dir, "node-red.log"), "utf8");
    let exited = false;
    child.on("exit", () => { exited = true; });
    try {
        await waitFor(async () => {
            if (exited) throw new Error("Node-RED exited:\n" + log());
            const res = await fetch(url + "/");
            return res.status === 200;
        }, "Node-RED answering", 60000);
    } catch (err) {
        child.kill("SIGKILL");
        throw new Error(err.message + "\n" + log());
    }
    return {
        url, name, dir, log, userDir, credentialSecret: options.credentialSecret,
        async stop() {
            if (exited) return;
            const gone = new Promise((resolve) => child.once("exit", resolve));
            child.kill("SIGTERM");
            const timer = setTimeout(() => child.kill("SIGKILL"), 10000);
            await gone;
            clearTimeout(timer);
        },
    };
}

/** Call the Admin API: returns {status, body}. */
async function admin(nr, method, route, token, body, headers) {
    const res = await fetch(nr.url + route, {
        method,
        headers: Object.assign({ "Node-RED-API-Version": "v2", "Content-Type": "application/json" },
            token ? { Authorization: "Bearer " + token } : {}, headers || {}),
        body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    let parsed = text;
    try { parsed = JSON.parse(text); } catch (err) { /* not JSON */ }
    return { status: res.status, body: parsed };
}

/** Deploy flows with a token; fails the test unless Node-RED took them. */
async function deploy(nr, token, flows) {
    const reply = await admin(nr, "POST", "/flows", token, { flows }, { "Node-RED-Deployment-Type": "full" });
    assert.equal(reply.status, 200, JSON.stringify(reply.body));
    return reply.body;
}

module.exports = {
    URL, ADMIN_USER, ADMIN_PASSWORD, NODE_RED_DIR, ROLES,
    uid, adminClient, makeUser, startNodeRed, admin, deploy, waitFor, freePort,
};
