"use strict";
// Sign-in through iapflow for the editor and Admin API (settings.adminAuth) and for HTTP-in
// endpoints (settings.httpNodeMiddleware).
//
// Editor and Admin API: the login form checks a user's iapflow username and password; a bearer
// token that is an iapflow JWT is accepted through adminAuth.tokens(). The user's roles decide:
//   "*"    members of admins, nodered admins or <name>noderedadmins, and the instance's owner
//   "read" members of nodered users or <name>noderedusers
//   anyone else is refused.
// HTTP-in endpoints: "Authorization: Bearer <jwt>" (or "JWT <jwt>") or Basic with iapflow
// credentials; the caller must be in nodered api users or <name>noderedapiusers (or be an
// admin or the owner), unless apiAllowAnonymous is set.

const connection = require("./lib/connection");

const DEFAULT_CACHE_SECONDS = 60;
// How long a sign-in waits for the connection to iapflow before it is refused (503 for HTTP-in):
// while iapflow cannot be reached the connection keeps trying, and callers must not hang.
const DEFAULT_CONNECT_WAIT_MS = 10000;

/** The role names that decide permissions on instance `name`, OpenFlow's names. */
function roleNames(name) {
    return {
        admins: ["admins", "nodered admins", `${name}noderedadmins`],
        users: ["nodered users", `${name}noderedusers`],
        api: ["nodered api users", `${name}noderedapiusers`],
    };
}

function roleSet(user) {
    return new Set((user && user.roles || []).map((role) => role && role.name).filter(Boolean));
}

function isOwner(user, options) {
    if (!user) return false;
    if (options.ownerId && user._id === options.ownerId) return true;
    return !!(options.ownerName && user.username === options.ownerName);
}

/** "*", "read" or null for an iapflow user (as the sign-in reply gives it) on this instance. */
function permissionsFor(user, options) {
    if (!user) return null;
    const names = roleNames(options.name || "");
    const roles = roleSet(user);
    if (isOwner(user, options) || names.admins.some((r) => roles.has(r))) return "*";
    if (names.users.some((r) => roles.has(r))) return "read";
    return null;
}

/** True if the user may call this instance's HTTP-in endpoints. */
function mayCallApi(user, options) {
    if (!user) return false;
    const names = roleNames(options.name || "");
    const roles = roleSet(user);
    return isOwner(user, options) || roles.has("admins") || names.api.some((r) => roles.has(r));
}

/** A small time-limited cache of successful checks (tokens, basic credentials). */
class Cache {
    constructor(seconds) {
        this.ms = seconds * 1000;
        this.entries = new Map();
    }
    get(key) {
        const entry = this.entries.get(key);
        if (!entry) return undefined;
        if (entry.until < Date.now()) {
            this.entries.delete(key);
            return undefined;
        }
        return entry.value;
    }
    set(key, value) {
        if (this.ms <= 0) return;
        if (this.entries.size > 1000) this.entries.clear();
        this.entries.set(key, { value, until: Date.now() + this.ms });
    }
}

/** The shared client, or an Error once `ms` have passed without a connection. */
async function connected(ms) {
    let timer;
    const waited = new Promise((resolve, reject) => {
        timer = setTimeout(() => reject(new Error(`no connection to iapflow within ${ms} ms`)), ms);
    });
    try {
        return await Promise.race([connection.get(), waited]);
    } finally {
        clearTimeout(timer);
    }
}

/** The iapflow user for credentials ({username, password} or {jwt}), or null if refused. */
async function signin(credentials, waitMs) {
    const client = await connected(waitMs || DEFAULT_CONNECT_WAIT_MS);
    try {
        const reply = await client.validate(credentials);
        return reply.user || null;
    } catch (err) {
        if (err && err.name === "ReplyError") return null;
        throw err;
    }
}

/** As signin(), but null when iapflow cannot be reached: nobody is let in unchecked. */
async function signinOrNull(credentials, waitMs) {
    try {
        return await signin(credentials, waitMs);
    } catch (err) {
        console.warn(`[iapflow auth] cannot check a sign-in, refusing it: ${err.message}`);
        return null;
    }
}

/**
 * settings.adminAuth for an instance: options {name, ownerId, ownerName, cacheSeconds,
 * connectWaitMs}.
 * Users signed in through the form are remembered by username for users().
 */
function adminAuth(options) {
    options = options || {};
    const known = new Map();
    const tokens = new Cache(options.cacheSeconds === undefined ? DEFAULT_CACHE_SECONDS : options.cacheSeconds);
    function toNodeRed(user) {
        const permissions = permissionsFor(user, options);
        if (!permissions) return null;
        const result = { username: user.username || user.name, permissions, iapflowId: user._id };
        known.set(result.username, result);
        return result;
    }
    return {
        type: "credentials",
        async users(username) {
            return known.get(username) || null;
        },
        async authenticate(username, password) {
            if (typeof username !== "string" || typeof password !== "string" || !username) return null;
            return toNodeRed(await signinOrNull({ username, password }, options.connectWaitMs));
        },
        async tokens(token) {
            if (typeof token !== "string" || !token) return null;
            const cached = tokens.get(token);
            if (cached) return cached;
            const user = toNodeRed(await signinOrNull({ jwt: token }, options.connectWaitMs));
            if (user) tokens.set(token, user);
            return user;
        },
    };
}

function unauthorized(res, message) {
    res.set("WWW-Authenticate", 'Basic realm="iapflow"');
    res.status(401).json({ error: "unauthorized", message });
}

/**
 * settings.httpNodeMiddleware for an instance: options {name, ownerId, ownerName,
 * apiAllowAnonymous, cacheSeconds, connectWaitMs}. Sets req.user to the iapflow user.
 */
function httpNodeMiddleware(options) {
    options = options || {};
    const cache = new Cache(options.cacheSeconds === undefined ? DEFAULT_CACHE_SECONDS : options.cacheSeconds);
    return function iapflowHttpAuth(req, res, next) {
        if (options.apiAllowAnonymous) return next();
        const header = String(req.headers.authorization || "");
        const space = header.indexOf(" ");
        const scheme = space > 0 ? header.slice(0, space).toLowerCase() : "";
        const value = space > 0 ? header.slice(space + 1).trim() : "";
        let credentials = null;
        if ((scheme === "bearer" || scheme === "jwt") && value) {
            credentials = { jwt: value };
        } else if (scheme === "basic" && value) {
            const text = Buffer.from(value, "base64").toString("utf8");
            const colon = text.indexOf(":");
            if (colon > 0) credentials = { username: text.slice(0, colon), password: text.slice(colon + 1) };
        }
        if (!credentials) return unauthorized(res, "sign in with an iapflow token (Bearer) or username and password (Basic)");
        const key = header;
        const cached = cache.get(key);
        if (cached) {
            req.user = cached;
            return next();
        }
        signin(credentials, options.connectWaitMs).then((user) => {
            if (!user) return unauthorized(res, "iapflow refused these credentials");
            if (!mayCallApi(user, options)) {
                return res.status(403).json({ error: "forbidden", message: "needs membership of nodered api users" });
            }
            cache.set(key, user);
            req.user = user;
            next();
        }, (err) => {
            res.status(503).json({ error: "unavailable", message: "iapflow cannot be reached: " + err.message });
        });
    };
}

module.exports = { adminAuth, httpNodeMiddleware, permissionsFor, mayCallApi, roleNames };
