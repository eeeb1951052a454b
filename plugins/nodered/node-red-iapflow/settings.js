"use strict";
// Builds a Node-RED settings object for an instance run by iapflow. iapflow's process runtime
// writes a settings file that calls this; other deployments can do the same:
//
//   module.exports = require("node-red-iapflow/settings")({uiPort: 1880, name: "alice", ...});
//
// Options (environment variables, as OpenFlow passes them, fill what is left out):
//   url        iapflow's JSON websocket URL            env api_ws_url
//   jwt        token of the instance's owner            env jwt
//   name       the instance's nodered_id                env nodered_id
//   ownerId, ownerName  the owner (full editor rights)  env nodered_owner_id, nodered_sa
//   credentialSecret    key of Node-RED's credential encryption  env nodered_credential_secret
//   apiAllowAnonymous   HTTP-in endpoints without sign-in        env api_allow_anonymous
//   uiHost, uiPort, nodesDir, cacheSeconds, and `extra` (merged over the result last)

const auth = require("./auth");
const connection = require("./lib/connection");
const storage = require("./storage");

function truthy(value) {
    return value === true || value === "true" || value === "1";
}

module.exports = function iapflowSettings(options) {
    options = Object.assign({}, options || {});
    const env = process.env;
    const o = {
        url: options.url || env.api_ws_url || "",
        jwt: options.jwt || env.jwt || "",
        name: options.name || env.nodered_id || "",
        ownerId: options.ownerId || env.nodered_owner_id || "",
        ownerName: options.ownerName || env.nodered_sa || "",
        credentialSecret: options.credentialSecret || env.nodered_credential_secret || "",
        apiAllowAnonymous: options.apiAllowAnonymous !== undefined
            ? truthy(options.apiAllowAnonymous) : truthy(env.api_allow_anonymous),
        cacheSeconds: options.cacheSeconds,
    };
    if (!o.url) throw new Error("node-red-iapflow: no iapflow URL (settings url or env api_ws_url)");
    if (!o.jwt) throw new Error("node-red-iapflow: no token for the instance (settings jwt or env jwt)");
    if (!o.name) throw new Error("node-red-iapflow: no instance name (settings name or env nodered_id)");
    if (!o.credentialSecret) {
        throw new Error("node-red-iapflow: no credentialSecret: credentials are stored encrypted with it");
    }
    connection.configure({ url: o.url, jwt: o.jwt });
    const settings = {
        uiHost: options.uiHost || "127.0.0.1",
        uiPort: options.uiPort || 1880,
        credentialSecret: o.credentialSecret,
        storageModule: storage,
        iapflow: { url: o.url, name: o.name, ownerId: o.ownerId, ownerName: o.ownerName },
        adminAuth: auth.adminAuth(o),
        httpNodeMiddleware: auth.httpNodeMiddleware(o),
        runtimeState: { enabled: true, ui: true },
        logging: { console: { level: "info", metrics: false, audit: false } },
        editorTheme: {
            page: { title: `Node-RED ${o.name} (iapflow)` },
            header: { title: `Node-RED ${o.name}` },
            projects: { enabled: false },
            tours: false,
        },
        diagnostics: { enabled: false },
        telemetry: { enabled: false, updateNotification: false },
        externalModules: { autoInstall: false },
    };
    if (options.nodesDir) settings.nodesDir = options.nodesDir;
    return Object.assign(settings, options.extra || {});
};
