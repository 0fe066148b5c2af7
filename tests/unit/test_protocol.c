/* Unit tests of the agent protocol: round trips of heartbeat requests and
 * answers and peer leases, strict validation (each error names its field),
 * oversized arrays and strings refused. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meridian/error.h"
#include "meridian/protocol.h"

static void fill_request(mrd_hb_request *r)
{
    mrd_hb_request_init(r);
    snprintf(r->node, sizeof(r->node), "db-eu-1");
    snprintf(r->region, sizeof(r->region), "eu");
    r->seq = 42;
    r->nepochs = 2;
    r->epochs = calloc(2, sizeof(*r->epochs));
    snprintf(r->epochs[0].service, sizeof(r->epochs[0].service), "orders");
    r->epochs[0].epoch = 7;
    snprintf(r->epochs[1].service, sizeof(r->epochs[1].service), "users");
    r->epochs[1].epoch = 0;
    r->nchecks = 1;
    r->checks = calloc(1, sizeof(*r->checks));
    snprintf(r->checks[0].name, sizeof(r->checks[0].name), "pg");
    r->checks[0].status = MRD_CHECK_WARNING;
    snprintf(r->checks[0].output, sizeof(r->checks[0].output), "slow\nreply");
    r->checks[0].duration_ms = 12;
    r->nmembers = 2;
    r->members = calloc(2, sizeof(*r->members));
    mrd_hb_member *m = &r->members[0];
    snprintf(m->service, sizeof(m->service), "orders");
    snprintf(m->name, sizeof(m->name), "orders-eu-1");
    snprintf(m->kind, sizeof(m->kind), "postgresql");
    m->role = MRD_MEMBER_PRIMARY;
    m->timeline = 3;
    m->position = (int64_t)0x16B374D48LL;
    m->lag_bytes = 0;
    m->lag_ms = 0;
    m->healthy = 1;
    m->nstandbys = 2;
    snprintf(m->standbys[0].name, sizeof(m->standbys[0].name), "orders-us-1");
    snprintf(m->standbys[0].address, sizeof(m->standbys[0].address), "10.1.2.3");
    snprintf(m->standbys[0].state, sizeof(m->standbys[0].state), "streaming");
    snprintf(m->standbys[0].sync_state, sizeof(m->standbys[0].sync_state), "async");
    m->standbys[0].sent_position = (int64_t)0x16B374D48LL;
    m->standbys[0].flush_position = (int64_t)0x16B374D00LL;
    m->standbys[0].replay_position = (int64_t)0x16B374C00LL;
    m->standbys[0].replay_lag_ms = 3;
    /* a standby still starting: nothing known but its state */
    snprintf(m->standbys[1].state, sizeof(m->standbys[1].state), "startup");
    m->standbys[1].replay_lag_ms = -1;
    m = &r->members[1];
    snprintf(m->service, sizeof(m->service), "users");
    snprintf(m->name, sizeof(m->name), "users-eu-1");
    snprintf(m->kind, sizeof(m->kind), "postgresql");
    m->role = MRD_MEMBER_REPLICA;
    m->fenced = 1;
    m->timeline = 1;
    m->receive_position = 5000;
    m->replay_position = 4000;
    m->replay_timestamp_ms = 1795000000000LL;
    m->lag_bytes = -1;
    m->lag_ms = 250;
    r->nprobes = 1;
    r->probes = calloc(1, sizeof(*r->probes));
    snprintf(r->probes[0].region, sizeof(r->probes[0].region), "us");
    snprintf(r->probes[0].target, sizeof(r->probes[0].target), "127.0.0.1:5432");
    r->probes[0].ok = 0;
    r->probes[0].latency_ms = 1.5;
    snprintf(r->probes[0].error, sizeof(r->probes[0].error), "connection refused");
    r->nresults = 1;
    r->results = calloc(1, sizeof(*r->results));
    snprintf(r->results[0].id, sizeof(r->results[0].id), "c-17");
    r->results[0].status = MRD_RESULT_REFUSED;
    snprintf(r->results[0].error, sizeof(r->results[0].error), "stale epoch 6 < 7");
    r->results[0].epoch = 6;
}

Test(protocol, request_round_trip)
{
    mrd_hb_request r, d;
    char err[256];
    fill_request(&r);
    json_t *j = mrd_hb_request_to_json(&r);
    cr_assert_not_null(j);
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    cr_assert_eq(mrd_hb_request_parse(text, strlen(text), &d, err, sizeof(err)), 0, "%s", err);
    free(text);

    cr_assert_str_eq(d.node, "db-eu-1");
    cr_assert_str_eq(d.region, "eu");
    cr_assert_eq(d.seq, 42);
    cr_assert_eq(d.nepochs, 2);
    int found = 0;
    for (size_t i = 0; i < d.nepochs; i++)
        if (strcmp(d.epochs[i].service, "orders") == 0 && d.epochs[i].epoch == 7)
            found++;
    cr_assert_eq(found, 1);
    cr_assert_eq(d.nchecks, 1);
    cr_assert_str_eq(d.checks[0].output, "slow\nreply");
    cr_assert_eq(d.checks[0].status, MRD_CHECK_WARNING);
    cr_assert_eq(d.checks[0].duration_ms, 12);
    cr_assert_eq(d.nmembers, 2);
    cr_assert_eq(memcmp(&d.members[0], &r.members[0], sizeof(d.members[0])), 0);
    cr_assert_eq(memcmp(&d.members[1], &r.members[1], sizeof(d.members[1])), 0);
    cr_assert_eq(d.members[1].lag_bytes, -1);
    cr_assert_eq(d.nprobes, 1);
    cr_assert_str_eq(d.probes[0].error, "connection refused");
    cr_assert_float_eq(d.probes[0].latency_ms, 1.5, 1e-9);
    cr_assert_eq(d.probes[0].ok, 0);
    cr_assert_eq(d.nresults, 1);
    cr_assert_eq(d.results[0].status, MRD_RESULT_REFUSED);
    cr_assert_eq(d.results[0].epoch, 6);
    cr_assert_str_eq(d.results[0].id, "c-17");
    mrd_hb_request_free(&d);
    mrd_hb_request_free(&r);
    cr_assert_null(r.members);
}

Test(protocol, answer_round_trip)
{
    mrd_hb_answer a, d;
    char err[256];
    mrd_hb_answer_init(&a);
    a.recorded = 1;
    a.heartbeat_ms = 250;
    a.nservices = 2;
    a.services = calloc(2, sizeof(*a.services));
    snprintf(a.services[0].service, MRD_PROTO_NAME_MAX, "orders");
    a.services[0].epoch = 8;
    snprintf(a.services[0].primary_region, MRD_PROTO_NAME_MAX, "us");
    a.services[0].primary_position = 123456;
    snprintf(a.services[1].service, MRD_PROTO_NAME_MAX, "users");
    a.ncommands = 2;
    a.commands = calloc(2, sizeof(*a.commands));
    snprintf(a.commands[0].id, MRD_PROTO_ID_MAX, "c-18");
    snprintf(a.commands[0].service, MRD_PROTO_NAME_MAX, "orders");
    snprintf(a.commands[0].member, MRD_PROTO_NAME_MAX, "orders-eu-1");
    a.commands[0].kind = MRD_CMD_REJOIN;
    a.commands[0].epoch = 8;
    a.commands[0].args = json_pack("{s:s, s:i}", "primary_conninfo", "host=x port=1", "n", 3);
    snprintf(a.commands[1].id, MRD_PROTO_ID_MAX, "c-19");
    snprintf(a.commands[1].service, MRD_PROTO_NAME_MAX, "orders");
    snprintf(a.commands[1].member, MRD_PROTO_NAME_MAX, "orders-eu-1");
    a.commands[1].kind = MRD_CMD_FENCE;
    a.commands[1].epoch = 8;
    a.nack = 1;
    a.ack = calloc(1, sizeof(*a.ack));
    snprintf(a.ack[0].id, MRD_PROTO_ID_MAX, "c-17");

    json_t *j = mrd_hb_answer_to_json(&a);
    cr_assert_not_null(j);
    cr_assert_eq(mrd_hb_answer_from_json(j, &d, err, sizeof(err)), 0, "%s", err);
    json_decref(j);
    cr_assert_eq(d.recorded, 1);
    cr_assert_eq(d.heartbeat_ms, 250);
    cr_assert_eq(d.nservices, 2);
    for (size_t i = 0; i < d.nservices; i++) {
        if (strcmp(d.services[i].service, "orders") == 0) {
            cr_assert_eq(d.services[i].epoch, 8);
            cr_assert_str_eq(d.services[i].primary_region, "us");
            cr_assert_eq(d.services[i].primary_position, 123456);
        } else {
            cr_assert_str_eq(d.services[i].service, "users");
            cr_assert_str_eq(d.services[i].primary_region, "");
        }
    }
    cr_assert_eq(d.ncommands, 2);
    cr_assert_eq(d.commands[0].kind, MRD_CMD_REJOIN);
    cr_assert_str_eq(json_string_value(json_object_get(d.commands[0].args, "primary_conninfo")),
                     "host=x port=1");
    cr_assert(json_is_object(d.commands[1].args));
    cr_assert_eq(json_object_size(d.commands[1].args), 0);
    cr_assert_eq(d.nack, 1);
    cr_assert_str_eq(d.ack[0].id, "c-17");
    mrd_hb_answer_free(&d);
    mrd_hb_answer_free(&a);
}

Test(protocol, minimal_messages_take_defaults)
{
    mrd_hb_request r;
    mrd_hb_answer a;
    char err[256];
    const char *req = "{\"node\":\"n\",\"region\":\"r\",\"seq\":0}";
    cr_assert_eq(mrd_hb_request_parse(req, strlen(req), &r, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(r.nmembers + r.nchecks + r.nepochs + r.nprobes + r.nresults, 0);
    mrd_hb_request_free(&r);
    const char *ans = "{\"recorded\":false,\"heartbeat_ms\":1000,\"future_field\":[1]}";
    cr_assert_eq(mrd_hb_answer_parse(ans, strlen(ans), &a, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(a.recorded, 0);
    mrd_hb_answer_free(&a);
}

/* Replaces the value at a dotted path ("members.1.lag_bytes": arrays by
 * index) in a copy of the full request, decodes it and returns the error. */
static int request_with(const char *path, json_t *value, char *err, size_t errlen)
{
    mrd_hb_request r, d;
    fill_request(&r);
    json_t *j = mrd_hb_request_to_json(&r);
    mrd_hb_request_free(&r);
    char buf[128];
    snprintf(buf, sizeof(buf), "%s", path);
    json_t *cur = j;
    char *save = NULL;
    char *tok = strtok_r(buf, ".", &save);
    for (;;) {
        char *next = strtok_r(NULL, ".", &save);
        if (!next) {
            if (json_is_array(cur)) {
                json_array_set_new(cur, (size_t)atoi(tok), value);
            } else if (value) {
                json_object_set_new(cur, tok, value);
            } else {
                json_object_del(cur, tok);
            }
            break;
        }
        cur =
            json_is_array(cur) ? json_array_get(cur, (size_t)atoi(tok)) : json_object_get(cur, tok);
        cr_assert_not_null(cur, "path %s", path);
        tok = next;
    }
    int rc = mrd_hb_request_from_json(j, &d, err, errlen);
    json_decref(j);
    if (rc)
        cr_assert_null(d.members, "output must be empty after failure");
    mrd_hb_request_free(&d);
    return rc;
}

#define EXPECT_REQ_ERR(path, value, msg)                                                           \
    do {                                                                                           \
        char err_[256];                                                                            \
        cr_assert_eq(request_with(path, value, err_, sizeof(err_)), MRD_EPARSE, "%s", path);       \
        cr_assert_str_eq(err_, msg);                                                               \
    } while (0)

Test(protocol, request_errors_name_the_field)
{
    EXPECT_REQ_ERR("members.1.lag_bytes", json_integer(-5),
                   "members[1].lag_bytes: must be a non-negative integer");
    EXPECT_REQ_ERR("members.1.lag_bytes", json_string("5"),
                   "members[1].lag_bytes: must be a non-negative integer");
    EXPECT_REQ_ERR("members.0.role", json_string("leader"),
                   "members[0].role: must be one of unknown, primary, replica, fenced");
    EXPECT_REQ_ERR("members.0.healthy", NULL, "members[0].healthy: is required");
    EXPECT_REQ_ERR("members.0.healthy", json_integer(1),
                   "members[0].healthy: must be true or false");
    EXPECT_REQ_ERR("members.0.timeline", json_integer(1LL << 33),
                   "members[0].timeline: must be an integer between 0 and 4294967295");
    EXPECT_REQ_ERR("members.0.position", json_real(1.5),
                   "members[0].position: must be a non-negative integer");
    EXPECT_REQ_ERR("members.1.service", json_string(""), "members[1].service: must not be empty");
    EXPECT_REQ_ERR("members.1", json_string("x"), "members[1]: must be an object");
    EXPECT_REQ_ERR("node", NULL, "node: is required");
    EXPECT_REQ_ERR("node", json_integer(3), "node: must be a string");
    EXPECT_REQ_ERR("region", json_string("e\x01u"), "region: must not contain control characters");
    EXPECT_REQ_ERR("seq", json_integer(-1), "seq: must be a non-negative integer");
    EXPECT_REQ_ERR("epochs.orders", json_integer(-1),
                   "epochs.orders: must be a non-negative integer");
    EXPECT_REQ_ERR("epochs", json_array(), "epochs: must be an object");
    EXPECT_REQ_ERR("checks.0.status", json_string("ok"),
                   "checks[0].status: must be one of passing, warning, critical");
    EXPECT_REQ_ERR("checks.0.duration_ms", json_integer(86400001),
                   "checks[0].duration_ms: must be an integer between 0 and 86400000");
    EXPECT_REQ_ERR("checks", json_object(), "checks: must be an array");
    EXPECT_REQ_ERR("probes.0.latency_ms", json_integer(-2),
                   "probes[0].latency_ms: must be a number between 0 and 86400000");
    EXPECT_REQ_ERR("probes.0.ok", json_null(), "probes[0].ok: must be true or false");
    EXPECT_REQ_ERR("results.0.status", json_string("ok"),
                   "results[0].status: must be one of done, failed, refused");
    EXPECT_REQ_ERR("results.0.epoch", NULL, "results[0].epoch: is required");
    EXPECT_REQ_ERR("results.0.id", json_stringn("a\0b", 3), "results[0].id: must not contain NUL");
}

Test(protocol, duplicate_member_refused)
{
    char err[256];
    json_t *dup = json_object();
    json_object_set_new(dup, "service", json_string("orders"));
    json_object_set_new(dup, "name", json_string("orders-eu-1"));
    json_object_set_new(dup, "kind", json_string("postgresql"));
    json_object_set_new(dup, "role", json_string("replica"));
    json_object_set_new(dup, "healthy", json_true());
    cr_assert_eq(request_with("members.1", dup, err, sizeof(err)), MRD_EPARSE);
    cr_assert_str_eq(err, "members[1]: duplicate member orders-eu-1 of service orders");
}

Test(protocol, oversized_strings_refused)
{
    char big[MRD_PROTO_OUTPUT_MAX + 1];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    char err[256];
    cr_assert_eq(request_with("checks.0.output", json_string(big), err, sizeof(err)), MRD_EPARSE);
    cr_assert_str_eq(err, "checks[0].output: must be at most 1023 bytes");
    big[MRD_PROTO_NAME_MAX] = '\0';
    cr_assert_eq(request_with("node", json_string(big), err, sizeof(err)), MRD_EPARSE);
    cr_assert_str_eq(err, "node: must be at most 127 bytes");
    big[MRD_PROTO_NAME_MAX - 1] = '\0';
    cr_assert_eq(request_with("node", json_string(big), err, sizeof(err)), 0, "%s", err);
}

Test(protocol, oversized_arrays_refused)
{
    char err[256];
    json_t *arr = json_array();
    for (int i = 0; i <= MRD_PROTO_MAX_MEMBERS; i++)
        json_array_append_new(arr, json_object());
    cr_assert_eq(request_with("members", arr, err, sizeof(err)), MRD_EPARSE);
    cr_assert_str_eq(err, "members: at most 256 entries");

    arr = json_array();
    for (int i = 0; i <= MRD_PROTO_MAX_PROBES; i++)
        json_array_append_new(arr, json_object());
    cr_assert_eq(request_with("probes", arr, err, sizeof(err)), MRD_EPARSE);
    cr_assert_str_eq(err, "probes: at most 64 entries");

    json_t *map = json_object();
    for (int i = 0; i <= MRD_PROTO_MAX_EPOCHS; i++) {
        char k[16];
        snprintf(k, sizeof(k), "s%d", i);
        json_object_set_new(map, k, json_integer(1));
    }
    cr_assert_eq(request_with("epochs", map, err, sizeof(err)), MRD_EPARSE);
    cr_assert_str_eq(err, "epochs: at most 256 entries");

    /* An answer with too many commands and too many acks. */
    mrd_hb_answer a;
    json_t *j = json_pack("{s:b, s:i}", "recorded", 1, "heartbeat_ms", 1000);
    arr = json_array();
    for (int i = 0; i <= MRD_PROTO_MAX_ACK; i++)
        json_array_append_new(arr, json_string("x"));
    json_object_set_new(j, "ack", arr);
    cr_assert_eq(mrd_hb_answer_from_json(j, &a, err, sizeof(err)), MRD_EPARSE);
    cr_assert_str_eq(err, "ack: at most 1024 entries");
    arr = json_array();
    for (int i = 0; i <= MRD_PROTO_MAX_COMMANDS; i++)
        json_array_append_new(arr, json_object());
    json_object_set_new(j, "ack", json_array());
    json_object_set_new(j, "commands", arr);
    cr_assert_eq(mrd_hb_answer_from_json(j, &a, err, sizeof(err)), MRD_EPARSE);
    cr_assert_str_eq(err, "commands: at most 256 entries");
    json_decref(j);
}

static int answer_text(const char *text, char *err, size_t errlen)
{
    mrd_hb_answer a;
    int rc = mrd_hb_answer_parse(text, strlen(text), &a, err, errlen);
    if (rc)
        cr_assert_null(a.commands);
    mrd_hb_answer_free(&a);
    return rc;
}

#define EXPECT_ANS_ERR(text, msg)                                                                  \
    do {                                                                                           \
        char err_[256];                                                                            \
        cr_assert_eq(answer_text(text, err_, sizeof(err_)), MRD_EPARSE, "%s", text);               \
        cr_assert_str_eq(err_, msg);                                                               \
    } while (0)

#define EXPECT_ANS_PREFIX(text, prefix)                                                            \
    do {                                                                                           \
        char err_[256];                                                                            \
        cr_assert_eq(answer_text(text, err_, sizeof(err_)), MRD_EPARSE, "%s", text);               \
        cr_assert_eq(strncmp(err_, prefix, strlen(prefix)), 0, "%s", err_);                        \
    } while (0)

#define CMD(extra)                                                                                 \
    "{\"recorded\":true,\"heartbeat_ms\":1000,\"commands\":[{\"id\":\"a\",\"service\":\"s\","      \
    "\"member\":\"m\",\"kind\":\"fence\",\"epoch\":1},{\"id\":\"b\",\"service\":\"s\","            \
    "\"member\":\"m\",\"kind\":\"fence\",\"epoch\":1" extra "}]}"

Test(protocol, answer_errors_name_the_field)
{
    EXPECT_ANS_ERR("[]", "message: must be a JSON object");
    EXPECT_ANS_ERR("{\"recorded\":1,\"heartbeat_ms\":1000}", "recorded: must be true or false");
    EXPECT_ANS_ERR("{\"recorded\":true}", "heartbeat_ms: is required");
    EXPECT_ANS_ERR("{\"recorded\":true,\"heartbeat_ms\":5}",
                   "heartbeat_ms: must be an integer between 10 and 600000");
    EXPECT_ANS_ERR("{\"recorded\":true,\"heartbeat_ms\":1000,\"services\":{\"s\":{}}}",
                   "services.s.epoch: is required");
    EXPECT_ANS_ERR("{\"recorded\":true,\"heartbeat_ms\":1000,\"services\":{\"s\":{\"epoch\":1,"
                   "\"primary_position\":-1}}}",
                   "services.s.primary_position: must be a non-negative integer");
    EXPECT_ANS_PREFIX(CMD(",\"kind\":\"nuke\""), "json: duplicate object key");
    EXPECT_ANS_ERR("{\"recorded\":true,\"heartbeat_ms\":1000,\"commands\":[{\"id\":\"a\","
                   "\"service\":\"s\",\"member\":\"m\",\"kind\":\"nuke\",\"epoch\":1}]}",
                   "commands[0].kind: must be one of fence, unfence, promote, rejoin");
    EXPECT_ANS_ERR(CMD(",\"args\":[1]"), "commands[1].args: must be an object");
    EXPECT_ANS_ERR(CMD(",\"args\":{\"x\":{\"y\":1}}"),
                   "commands[1].args.x: must be a string, number, boolean or null");
    EXPECT_ANS_ERR("{\"recorded\":true,\"heartbeat_ms\":1000,\"commands\":[{\"id\":\"a\","
                   "\"service\":\"s\",\"member\":\"m\",\"kind\":\"fence\",\"epoch\":1,"
                   "\"args\":{}},{\"id\":\"a\",\"service\":\"s\",\"member\":\"m\",\"kind\":"
                   "\"fence\",\"epoch\":1}]}",
                   "commands[1].id: duplicate command id a");
    EXPECT_ANS_ERR("{\"recorded\":true,\"heartbeat_ms\":1000,\"ack\":[\"\"]}",
                   "ack[0]: must be a command id (1 to 63 bytes)");
    EXPECT_ANS_PREFIX("{\"recorded\":true,", "json: ");
}

Test(protocol, lease_round_trip_and_errors)
{
    mrd_lease_request r = {.epoch = 7, .ttl_ms = 4000}, rd;
    snprintf(r.service, sizeof(r.service), "orders");
    snprintf(r.node, sizeof(r.node), "db-eu-1");
    char err[256];
    json_t *j = mrd_lease_request_to_json(&r);
    cr_assert_eq(mrd_lease_request_from_json(j, &rd, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(memcmp(&r, &rd, sizeof(r)), 0);
    json_object_set_new(j, "ttl_ms", json_integer(0));
    cr_assert_eq(mrd_lease_request_from_json(j, &rd, err, sizeof(err)), MRD_EPARSE);
    cr_assert_str_eq(err, "ttl_ms: must be an integer between 1 and 600000");
    cr_assert_eq(rd.epoch, 0);
    json_decref(j);

    mrd_lease_answer a = {.granted = 0, .epoch = 8, .ttl_ms = 0}, ad;
    snprintf(a.reason, sizeof(a.reason), "seen epoch 8");
    j = mrd_lease_answer_to_json(&a);
    cr_assert_eq(mrd_lease_answer_from_json(j, &ad, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(memcmp(&a, &ad, sizeof(a)), 0);
    json_object_del(j, "granted");
    cr_assert_eq(mrd_lease_answer_from_json(j, &ad, err, sizeof(err)), MRD_EPARSE);
    cr_assert_str_eq(err, "granted: is required");
    json_decref(j);
}

Test(protocol, enum_names)
{
    mrd_cmd_kind k;
    cr_assert_eq(mrd_cmd_kind_parse("promote", &k), 0);
    cr_assert_eq(k, MRD_CMD_PROMOTE);
    cr_assert_str_eq(mrd_cmd_kind_name(k), "promote");
    cr_assert_eq(mrd_cmd_kind_parse("x", &k), MRD_EINVAL);
    cr_assert_str_eq(mrd_member_role_name((mrd_member_role)9), "?");
    mrd_result_status s;
    cr_assert_eq(mrd_result_status_parse("refused", &s), 0);
    cr_assert_eq(s, MRD_RESULT_REFUSED);
    mrd_check_status c;
    cr_assert_eq(mrd_check_status_parse("critical", &c), 0);
    cr_assert_eq(c, MRD_CHECK_CRITICAL);
    mrd_member_role r;
    cr_assert_eq(mrd_member_role_parse("fenced", &r), 0);
    cr_assert_eq(r, MRD_MEMBER_FENCED);
}

Test(protocol, encode_refuses_out_of_range_enum)
{
    mrd_hb_request r;
    fill_request(&r);
    r.members[0].role = (mrd_member_role)42;
    cr_assert_null(mrd_hb_request_to_json(&r));
    mrd_hb_request_free(&r);
}

Test(protocol, long_map_key_not_repeated_in_error)
{
    char key[300], text[512], err[256];
    memset(key, 'k', sizeof(key) - 1);
    key[sizeof(key) - 1] = '\0';
    snprintf(text, sizeof(text),
             "{\"recorded\":true,\"heartbeat_ms\":1000,\"services\":{\"%s\":{}}}", key);
    mrd_hb_answer a;
    cr_assert_eq(mrd_hb_answer_parse(text, strlen(text), &a, err, sizeof(err)), MRD_EPARSE);
    cr_assert_str_eq(err, "services: keys must be at most 127 bytes");
}

Test(protocol, request_api_url_urgent_and_result_position_round_trip)
{
    const char *text = "{\"node\": \"n1\", \"region\": \"eu\", \"seq\": 3,"
                       " \"api_url\": \"http://127.0.0.1:7002\", \"urgent\": true,"
                       " \"results\": [{\"id\": \"1/fence/fence\", \"status\": \"done\","
                       " \"epoch\": 2, \"position\": 4096}]}";
    mrd_hb_request r;
    char err[256];
    cr_assert_eq(mrd_hb_request_parse(text, strlen(text), &r, err, sizeof(err)), 0, "%s", err);
    cr_assert_str_eq(r.api_url, "http://127.0.0.1:7002");
    cr_assert_eq(r.urgent, 1);
    cr_assert_eq(r.results[0].position, 4096);
    json_t *j = mrd_hb_request_to_json(&r);
    mrd_hb_request back;
    cr_assert_eq(mrd_hb_request_from_json(j, &back, err, sizeof(err)), 0, "%s", err);
    cr_assert_str_eq(back.api_url, r.api_url);
    cr_assert_eq(back.urgent, 1);
    cr_assert_eq(back.results[0].position, 4096);
    json_decref(j);
    mrd_hb_request_free(&back);
    mrd_hb_request_free(&r);

    const char *bad = "{\"node\": \"n1\", \"region\": \"eu\", \"seq\": 3, \"urgent\": 1}";
    cr_assert_eq(mrd_hb_request_parse(bad, strlen(bad), &r, err, sizeof(err)), MRD_EPARSE);
    cr_assert(strstr(err, "urgent") != NULL, "%s", err);
}

Test(protocol, poke_commands)
{
    char err[256];
    mrd_hb_answer a;
    json_t *j = json_loads("{\"commands\":[{\"id\":\"1/fence/fence\",\"service\":\"orders\","
                           "\"member\":\"m\",\"kind\":\"fence\",\"epoch\":2}]}",
                           0, NULL);
    cr_assert_eq(mrd_hb_poke_from_json(j, &a, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(a.ncommands, 1);
    cr_assert_eq(a.commands[0].kind, MRD_CMD_FENCE);
    cr_assert_eq(a.recorded, 0);
    mrd_hb_answer_free(&a);
    json_decref(j);
    j = json_loads("{\"commands\":[{\"id\":\"x\"}]}", 0, NULL);
    cr_assert_eq(mrd_hb_poke_from_json(j, &a, err, sizeof(err)), MRD_EPARSE);
    cr_assert_str_eq(err, "commands[0].service: is required");
    cr_assert_null(a.commands);
    json_decref(j);
    j = json_loads("[]", 0, NULL);
    cr_assert_eq(mrd_hb_poke_from_json(j, &a, err, sizeof(err)), MRD_EPARSE);
    json_decref(j);
}

Test(protocol, answer_primary_member_round_trip)
{
    const char *text = "{\"recorded\": true, \"heartbeat_ms\": 1000, \"services\": {\"orders\":"
                       " {\"epoch\": 3, \"primary_region\": \"us\", \"primary_member\":"
                       " \"orders-us\"}}, \"commands\": [], \"ack\": []}";
    mrd_hb_answer a;
    char err[256];
    cr_assert_eq(mrd_hb_answer_parse(text, strlen(text), &a, err, sizeof(err)), 0, "%s", err);
    cr_assert_str_eq(a.services[0].primary_member, "orders-us");
    json_t *j = mrd_hb_answer_to_json(&a);
    cr_assert_str_eq(
        json_string_value(json_object_get(json_object_get(json_object_get(j, "services"), "orders"),
                                          "primary_member")),
        "orders-us");
    json_decref(j);
    mrd_hb_answer_free(&a);
}

Test(protocol, standbys_round_trip_and_errors)
{
    mrd_hb_request r, d;
    char err[256];
    fill_request(&r);
    json_t *j = mrd_hb_request_to_json(&r);
    cr_assert_not_null(j);
    json_t *sb = json_object_get(json_array_get(json_object_get(j, "members"), 0), "standbys");
    cr_assert_eq(json_array_size(sb), 2);
    /* unknowns travel as null, a member without standbys has no key */
    cr_assert(json_is_null(json_object_get(json_array_get(sb, 1), "sent_position")));
    cr_assert(json_is_null(json_object_get(json_array_get(sb, 1), "replay_lag_ms")));
    cr_assert_null(json_object_get(json_array_get(json_object_get(j, "members"), 1), "standbys"));
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    cr_assert_eq(mrd_hb_request_parse(text, strlen(text), &d, err, sizeof(err)), 0, "%s", err);
    free(text);
    cr_assert_eq(d.members[0].nstandbys, 2);
    cr_assert_str_eq(d.members[0].standbys[0].state, "streaming");
    cr_assert_eq(d.members[0].standbys[0].flush_position, (int64_t)0x16B374D00LL);
    cr_assert_eq(d.members[0].standbys[1].sent_position, 0);
    cr_assert_eq(d.members[0].standbys[1].replay_lag_ms, -1);
    cr_assert_eq(d.members[1].nstandbys, 0);
    mrd_hb_request_free(&d);
    mrd_hb_request_free(&r);

    static const struct {
        const char *standbys, *error;
    } bad[] = {
        {"{}", "members[0].standbys: must be an array"},
        {"[{}]", "members[0].standbys[0].state: is required"},
        {"[{\"state\":\"streaming\",\"replay_lag_ms\":-1}]",
         "members[0].standbys[0].replay_lag_ms: must be a non-negative integer"},
        {"[{\"state\":\"streaming\",\"sent_position\":\"0/1\"}]",
         "members[0].standbys[0].sent_position: must be a non-negative integer"},
        {"[{\"state\":\"s\"},{\"state\":\"s\"},{\"state\":\"s\"},{\"state\":\"s\"},"
         "{\"state\":\"s\"},{\"state\":\"s\"},{\"state\":\"s\"},{\"state\":\"s\"},"
         "{\"state\":\"s\"}]",
         "members[0].standbys: at most 8 entries"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char msg[1024];
        snprintf(msg, sizeof(msg),
                 "{\"node\":\"n\",\"region\":\"eu\",\"seq\":1,\"members\":[{\"service\":"
                 "\"s\",\"name\":\"m\",\"kind\":\"postgresql\",\"role\":\"primary\","
                 "\"healthy\":true,\"standbys\":%s}]}",
                 bad[i].standbys);
        cr_assert_neq(mrd_hb_request_parse(msg, strlen(msg), &d, err, sizeof(err)), 0, "%s", msg);
        cr_assert_str_eq(err, bad[i].error, "%s", msg);
        mrd_hb_request_free(&d);
    }
}

/* ---- peer sets (answer) and peer leases (member) ---- */

Test(protocol, answer_peers_round_trip)
{
    mrd_hb_answer a, d;
    char err[256];
    mrd_hb_answer_init(&a);
    a.heartbeat_ms = 1000;
    a.nservices = 2;
    a.services = calloc(2, sizeof(*a.services));
    snprintf(a.services[0].service, MRD_PROTO_NAME_MAX, "orders");
    a.services[0].have_peers = 1;
    a.services[0].npeers = 2;
    a.services[0].peers = calloc(2, sizeof(mrd_hb_peer));
    snprintf(a.services[0].peers[0].member, MRD_PROTO_NAME_MAX, "orders-us");
    snprintf(a.services[0].peers[0].node, MRD_PROTO_NAME_MAX, "node-us");
    snprintf(a.services[0].peers[0].agent_url, MRD_PROTO_TARGET_MAX, "http://127.0.0.1:7071");
    snprintf(a.services[0].peers[1].member, MRD_PROTO_NAME_MAX, "orders-ap");
    snprintf(a.services[0].peers[1].node, MRD_PROTO_NAME_MAX, "node-ap");
    /* "users": no peers key at all (an older controller) */
    snprintf(a.services[1].service, MRD_PROTO_NAME_MAX, "users");
    json_t *j = mrd_hb_answer_to_json(&a);
    cr_assert_not_null(j);
    json_t *peers =
        json_object_get(json_object_get(json_object_get(j, "services"), "orders"), "peers");
    cr_assert_eq(json_array_size(peers), 2);
    cr_assert(json_is_null(json_object_get(json_array_get(peers, 1), "agent_url")));
    cr_assert_null(
        json_object_get(json_object_get(json_object_get(j, "services"), "users"), "peers"));
    cr_assert_eq(mrd_hb_answer_from_json(j, &d, err, sizeof(err)), 0, "%s", err);
    json_decref(j);
    for (size_t i = 0; i < d.nservices; i++) {
        const mrd_hb_service *s = &d.services[i];
        if (strcmp(s->service, "orders") == 0) {
            cr_assert_eq(s->have_peers, 1);
            cr_assert_eq(s->npeers, 2);
            cr_assert_str_eq(s->peers[0].member, "orders-us");
            cr_assert_str_eq(s->peers[0].node, "node-us");
            cr_assert_str_eq(s->peers[0].agent_url, "http://127.0.0.1:7071");
            cr_assert_str_eq(s->peers[1].agent_url, "");
        } else {
            cr_assert_eq(s->have_peers, 0);
            cr_assert_eq(s->npeers, 0);
        }
    }
    mrd_hb_answer_free(&d);
    mrd_hb_answer_free(&a);

    /* an empty set is a set: told, nobody to hold a lease from */
    const char *empty = "{\"recorded\":false,\"heartbeat_ms\":1000,\"services\":{\"s\":{\"epoch\":"
                        "1,\"peers\":[]}}}";
    cr_assert_eq(mrd_hb_answer_parse(empty, strlen(empty), &d, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(d.services[0].have_peers, 1);
    cr_assert_eq(d.services[0].npeers, 0);
    mrd_hb_answer_free(&d);
}

Test(protocol, answer_peers_errors_name_the_field)
{
    static const struct {
        const char *peers, *error;
    } bad[] = {
        {"{}", "services.s.peers: must be an array"},
        {"[1]", "services.s.peers[0]: must be an object"},
        {"[{\"node\":\"n\"}]", "services.s.peers[0].member: is required"},
        {"[{\"member\":\"m\"}]", "services.s.peers[0].node: is required"},
        {"[{\"member\":\"m\",\"node\":\"\"}]", "services.s.peers[0].node: must not be empty"},
        {"[{\"member\":\"m\",\"node\":\"n\",\"agent_url\":\"ftp://x\"}]",
         "services.s.peers[0].agent_url: must be an http:// or https:// URL"},
        {"[{\"member\":\"m\",\"node\":\"n\",\"agent_url\":\"http://x\\r\\nHost: y\"}]",
         "services.s.peers[0].agent_url: must not contain control characters"},
        {"[{\"member\":\"m\",\"node\":\"n\",\"agent_url\":7}]",
         "services.s.peers[0].agent_url: must be a string"},
        {"[{\"member\":\"m\",\"node\":\"n\"},{\"member\":\"m2\",\"node\":\"n\"}]",
         "services.s.peers[1].node: duplicate peer node n"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char text[1024], err[256];
        mrd_hb_answer d;
        snprintf(text, sizeof(text),
                 "{\"recorded\":false,\"heartbeat_ms\":1000,\"services\":{\"s\":{\"epoch\":1,"
                 "\"peers\":%s}}}",
                 bad[i].peers);
        cr_assert_eq(mrd_hb_answer_parse(text, strlen(text), &d, err, sizeof(err)), MRD_EPARSE,
                     "%s", text);
        cr_assert_str_eq(err, bad[i].error);
        cr_assert_null(d.services);
    }
    /* 65 peers: refused before any is read */
    char text[8192], err[256];
    size_t pos = (size_t)snprintf(
        text, sizeof(text),
        "{\"recorded\":false,\"heartbeat_ms\":1000,\"services\":{\"s\":{\"epoch\":1,"
        "\"peers\":[");
    for (int i = 0; i <= MRD_PROTO_MAX_PEERS; i++)
        pos += (size_t)snprintf(text + pos, sizeof(text) - pos,
                                "%s{\"member\":\"m%d\",\"node\":\"n%d\"}", i ? "," : "", i, i);
    snprintf(text + pos, sizeof(text) - pos, "]}}}");
    mrd_hb_answer d;
    cr_assert_eq(mrd_hb_answer_parse(text, strlen(text), &d, err, sizeof(err)), MRD_EPARSE);
    cr_assert_str_eq(err, "services.s.peers: at most 64 entries");
}

Test(protocol, member_leases_round_trip_and_errors)
{
    mrd_hb_request r, d;
    char err[256];
    fill_request(&r);
    mrd_hb_member *m = &r.members[0];
    m->have_leases = 1;
    m->nleases_required = 2;
    m->leases_required = calloc(2, sizeof(mrd_hb_name));
    snprintf(m->leases_required[0].name, MRD_PROTO_NAME_MAX, "node-us");
    snprintf(m->leases_required[1].name, MRD_PROTO_NAME_MAX, "node-ap");
    m->nleases_held = 1;
    m->leases_held = calloc(1, sizeof(mrd_hb_name));
    snprintf(m->leases_held[0].name, MRD_PROTO_NAME_MAX, "node-ap");
    json_t *j = mrd_hb_request_to_json(&r);
    cr_assert_not_null(j);
    /* a member without leases (the replica) sends neither key */
    json_t *m1 = json_array_get(json_object_get(j, "members"), 1);
    cr_assert_null(json_object_get(m1, "leases_required"));
    cr_assert_null(json_object_get(m1, "leases_held"));
    cr_assert_eq(mrd_hb_request_from_json(j, &d, err, sizeof(err)), 0, "%s", err);
    json_decref(j);
    cr_assert_eq(d.members[0].have_leases, 1);
    cr_assert_eq(d.members[0].nleases_required, 2);
    cr_assert_str_eq(d.members[0].leases_required[1].name, "node-ap");
    cr_assert_eq(d.members[0].nleases_held, 1);
    cr_assert_str_eq(d.members[0].leases_held[0].name, "node-ap");
    cr_assert_eq(d.members[1].have_leases, 0);
    cr_assert_null(d.members[1].leases_required);
    mrd_hb_request_free(&d);
    mrd_hb_request_free(&r);

    static const struct {
        const char *fields, *error;
    } bad[] = {
        {"\"leases_required\":{}", "members[0].leases_required: must be an array"},
        {"\"leases_required\":[1]", "members[0].leases_required[0]: must be a string"},
        {"\"leases_required\":[\"\"]",
         "members[0].leases_required[0]: must be a name of 1 to 127 bytes"},
        {"\"leases_required\":[\"a\\u0001\"]",
         "members[0].leases_required[0]: must not contain control characters"},
        {"\"leases_required\":[\"a\",\"a\"]", "members[0].leases_required[1]: duplicate name a"},
        {"\"leases_required\":[\"a\"],\"leases_held\":[\"b\",\"b\"]",
         "members[0].leases_held[1]: duplicate name b"},
        {"\"leases_held\":[\"a\"]", "members[0].leases_held: needs leases_required"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char text[1024];
        snprintf(text, sizeof(text),
                 "{\"node\":\"n\",\"region\":\"eu\",\"seq\":1,\"members\":[{\"service\":\"s\","
                 "\"name\":\"m\",\"kind\":\"postgresql\",\"role\":\"primary\",\"healthy\":true,"
                 "%s}]}",
                 bad[i].fields);
        cr_assert_eq(mrd_hb_request_parse(text, strlen(text), &d, err, sizeof(err)), MRD_EPARSE,
                     "%s", text);
        cr_assert_str_eq(err, bad[i].error);
        cr_assert_null(d.members);
    }
}
