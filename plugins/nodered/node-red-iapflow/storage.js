"use strict";
// Node-RED storage module (settings.storageModule) keeping everything in iapflow's `nodered`
// collection, one document per kind and instance, as OpenFlow's storage does:
//
//   {_type: "flow",       nodered_id, flows: "<JSON of the flows>", deployedby, deployedbyid}
//   {_type: "credential", nodered_id, credentials: "<JSON of Node-RED's encrypted {$: ...}>"}
//   {_type: "setting",    nodered_id, settings: "<JSON>"}
//   {_type: "session",    nodered_id, sessions: "<JSON>"}
//   {_type: "library",    nodered_id, type, path, meta: {...}, body: "<text>"}
//
// Credentials reach iapflow already encrypted with the instance's credentialSecret. The module
// watches the collection: when another writer (the web UI, another replica, a script) changes
// this instance's flows or credentials, Node-RED reloads them without a restart.

const connection = require("./lib/connection");

const COLLECTION = "nodered";
const RELOAD_DELAY_MS = 250;

let runtime = null;
let name = "";
let watchKey = null;
let reloadTimer = null;
// What this instance last loaded or saved, to tell its own writes from someone else's.
const known = { flow: undefined, credential: undefined };
const knownIds = { flow: undefined, credential: undefined };

function log(level, message) {
    const text = "[iapflow storage] " + message;
    if (runtime && runtime.log && typeof runtime.log[level] === "function") runtime.log[level](text);
    else console.log(text);
}

async function findOne(type, extra) {
    const client = await connection.get();
    const query = Object.assign({ _type: type, nodered_id: name }, extra || {});
    const found = await client.query(COLLECTION, query, { top: 1 });
    return found && found.length ? found[0] : null;
}

async function upsert(type, fields, uniqueness) {
    const client = await connection.get();
    const item = Object.assign(
        { _type: type, nodered_id: name, name: `${name} ${type}` }, fields);
    return client.insertOrUpdateOne(COLLECTION, item, uniqueness || "_type,nodered_id");
}

function parse(text, fallback) {
    if (typeof text !== "string" || !text) return fallback;
    try {
        return JSON.parse(text);
    } catch (err) {
        log("warn", `a stored document of ${name} is not valid JSON; using an empty value`);
        return fallback;
    }
}

function scheduleReload(why) {
    if (reloadTimer) clearTimeout(reloadTimer);
    reloadTimer = setTimeout(async () => {
        reloadTimer = null;
        log("info", `${why}; reloading the flows`);
        try {
            await runtime.nodes.loadFlows(true);
        } catch (err) {
            log("warn", "reloading the flows failed: " + err.message);
        }
    }, RELOAD_DELAY_MS);
}

function onChange(change) {
    if (!change) return;
    const doc = change.fullDocument;
    if (!doc) {
        const id = change.documentKey && change.documentKey._id;
        for (const kind of ["flow", "credential"]) {
            if (change.operationType === "delete" && id && id === knownIds[kind]) {
                known[kind] = undefined;
                knownIds[kind] = undefined;
                scheduleReload(`the ${kind} document was deleted`);
            }
        }
        return;
    }
    if (doc.nodered_id !== name) return;
    const kind = doc._type;
    if (kind !== "flow" && kind !== "credential") return;
    const value = kind === "flow" ? doc.flows : doc.credentials;
    knownIds[kind] = doc._id;
    if (value === known[kind]) return; // our own write, or nothing new
    known[kind] = value;
    scheduleReload(`the ${kind === "flow" ? "flows" : "credentials"} were changed by ${doc._modifiedby || "someone else"}`);
}

const storage = {
    /** Called by Node-RED with its settings and runtime before anything else. */
    async init(settings, _runtime) {
        runtime = _runtime;
        const options = settings.iapflow || {};
        name = options.name || process.env.nodered_id || "";
        if (!name) throw new Error("iapflow storage: settings.iapflow.name (the nodered_id) is not set");
        if (!connection.configured() && options.url) connection.configure(options);
        const client = await connection.get();
        if (options.watch !== false) {
            watchKey = await client.watch(COLLECTION, [{ $match: { nodered_id: name } }], onChange);
        }
        log("info", `flows of ${name} are kept in iapflow's ${COLLECTION} collection at ${client.url}`);
    },

    async getFlows() {
        const doc = await findOne("flow");
        known.flow = doc ? doc.flows : undefined;
        knownIds.flow = doc ? doc._id : undefined;
        return parse(doc && doc.flows, []);
    },

    async saveFlows(flows, user) {
        const text = JSON.stringify(flows);
        known.flow = text;
        const fields = { flows: text };
        if (user && user.username) fields.deployedby = user.username;
        if (user && user.id) fields.deployedbyid = user.id;
        const doc = await upsert("flow", fields);
        if (doc) knownIds.flow = doc._id;
    },

    async getCredentials() {
        const doc = await findOne("credential");
        known.credential = doc ? doc.credentials : undefined;
        knownIds.credential = doc ? doc._id : undefined;
        return parse(doc && doc.credentials, {});
    },

    async saveCredentials(credentials) {
        // Node-RED hands over {"$": "<encrypted>"} when credentialSecret is set. Field names may
        // not start with "$" in iapflow, so the blob is kept as JSON text.
        const text = JSON.stringify(credentials);
        known.credential = text;
        const doc = await upsert("credential", { credentials: text });
        if (doc) knownIds.credential = doc._id;
    },

    async getSettings() {
        const doc = await findOne("setting");
        return parse(doc && doc.settings, {});
    },

    async saveSettings(settings) {
        await upsert("setting", { settings: JSON.stringify(settings) });
    },

    async getSessions() {
        const doc = await findOne("session");
        return parse(doc && doc.sessions, {});
    },

    async saveSessions(sessions) {
        await upsert("session", { sessions: JSON.stringify(sessions) });
    },

    /** A library file's body, or a folder's listing: sub-folder names, then {fn, ...meta}. */
    async getLibraryEntry(type, path) {
        path = path || "";
        if (path && !path.endsWith("/")) {
            const doc = await findOne("library", { type, path });
            if (doc) return doc.body;
            if (type === "flows" && !path.endsWith(".json")) {
                const json = await findOne("library", { type, path: path + ".json" });
                if (json) return json.body;
            }
        }
        const prefix = path && !path.endsWith("/") ? path + "/" : path;
        const client = await connection.get();
        const entries = await client.query(
            COLLECTION, { _type: "library", nodered_id: name, type },
            { projection: { path: 1, meta: 1 }, top: 10000 });
        const dirs = new Set();
        const files = [];
        for (const entry of entries) {
            if (typeof entry.path !== "string" || !entry.path.startsWith(prefix)) continue;
            const rest = entry.path.slice(prefix.length);
            const slash = rest.indexOf("/");
            if (slash >= 0) dirs.add(rest.slice(0, slash));
            else if (rest) files.push(Object.assign({}, entry.meta || {}, { fn: rest }));
        }
        if (path && !path.endsWith("/") && !dirs.size && !files.length) {
            throw new Error(`Library Entry not found ${path}`);
        }
        files.sort((a, b) => a.fn.localeCompare(b.fn));
        return [...dirs].sort().concat(files);
    },

    async saveLibraryEntry(type, path, meta, body) {
        if (type === "flows" && !path.endsWith(".json")) path += ".json";
        await upsert("library", { type, path, meta: meta || {}, body }, "_type,nodered_id,type,path");
    },
};

/** Stop watching (tests). */
storage.close = async function () {
    if (reloadTimer) clearTimeout(reloadTimer);
    reloadTimer = null;
    if (watchKey) {
        const client = await connection.get();
        await client.unwatch(watchKey);
        watchKey = null;
    }
};

module.exports = storage;
