"""OpenFlow's well-known principal ids and the built-in roles ensured at startup.

The ids are OpenFlow's, so that data and clients move over unchanged.
"""

from __future__ import annotations

ROOT = "59f1f6e6f0a22200126638d8"
ADMINS = "5a1702fa245d9013697656fb"
USERS = "5a17f157c4815318c8536c21"
ROBOTS = "5ac0850ca538fee1ebdb996c"
CUSTOMER_ADMINS = "5a1702fa245d9013697656fc"
RESELLERS = "5a1702fa245d9013697656fd"
NODERED_USERS = "5a23f18a2e8987292ddbe061"
NODERED_ADMINS = "5a17f157c4815318c8536c20"
NODERED_API_USERS = "5a17f157c4815318c8536c22"
FILESTORE_USERS = "5b6ab63c8d4a64b7c47f4a8f"
FILESTORE_ADMINS = "5b6ab63c8d4a64b7c47f4a8e"
ROBOT_USERS = "5aef0142f3683977b0aa3dd3"
ROBOT_ADMINS = "5aef0142f3683977b0aa3dd2"
PERSONAL_NODERED_USERS = "5a23f18a2e8987292ddbe062"
ROBOT_AGENT_USERS = "5f33c29d8fe78504bd259a04"
GUEST = "65cb30c40ff51e174095573c"
WORKITEM_QUEUE_ADMINS = "625440c4231309af5f2052cd"
WORKITEM_QUEUE_USERS = "62544134231309e2cd2052ce"

# name -> id of every built-in role; a role with one of these names may only exist with its id.
BUILTIN_ROLES: dict[str, str] = {
    "admins": ADMINS,
    "users": USERS,
    "robots": ROBOTS,
    "customer admins": CUSTOMER_ADMINS,
    "resellers": RESELLERS,
    "nodered users": NODERED_USERS,
    "nodered admins": NODERED_ADMINS,
    "nodered api users": NODERED_API_USERS,
    "filestore users": FILESTORE_USERS,
    "filestore admins": FILESTORE_ADMINS,
    "robot users": ROBOT_USERS,
    "robot admins": ROBOT_ADMINS,
    "personal nodered users": PERSONAL_NODERED_USERS,
    "robot agent users": ROBOT_AGENT_USERS,
    "workitem queue admins": WORKITEM_QUEUE_ADMINS,
    "workitem queue users": WORKITEM_QUEUE_USERS,
}

# Built-in users: name -> id. They may only exist with these ids.
BUILTIN_USERS: dict[str, str] = {"root": ROOT, "guest": GUEST}

# Memberships housekeeping ensures (role id -> member ids), as OpenFlow does.
BUILTIN_MEMBERS: dict[str, list[str]] = {
    ADMINS: [ROOT],
    FILESTORE_ADMINS: [ADMINS],
    FILESTORE_USERS: [ADMINS, USERS],
    WORKITEM_QUEUE_ADMINS: [ADMINS],
}

WELLKNOWN_IDS = frozenset(BUILTIN_ROLES.values()) | frozenset(BUILTIN_USERS.values())


def server_stamp(now: object) -> dict[str, object]:
    """The system fields of a document the server writes on its own (built-ins, audit)."""
    return {
        "_created": now,
        "_createdby": "iapflow",
        "_createdbyid": ROOT,
        "_modified": now,
        "_modifiedby": "iapflow",
        "_modifiedbyid": ROOT,
        "_version": 0,
    }
