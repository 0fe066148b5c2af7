/* Unit tests of the agent's child processes (agent/exec.c) on a private
 * libuv loop: exit status and output of stdout and stderr, extra
 * environment, output truncation, the timeout that kills the whole process
 * group (a grandchild too), a program that does not exist. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent.h"
#include "meridian/error.h"

typedef struct {
    int calls;
    int status;
    int timed_out;
    char output[8192];
} outcome;

static void on_exit_cb(int status, int timed_out, const char *output, void *data)
{
    outcome *o = data;
    o->calls++;
    o->status = status;
    o->timed_out = timed_out;
    snprintf(o->output, sizeof(o->output), "%s", output);
}

static outcome run(const char *const *argv, const char *const *env, uint64_t timeout_ms,
                   size_t max_output)
{
    uv_loop_t loop;
    outcome o;
    memset(&o, 0, sizeof(o));
    cr_assert_eq(uv_loop_init(&loop), 0);
    cr_assert_eq(mrd__exec_start(&loop, argv, env, timeout_ms, max_output, on_exit_cb, &o, NULL),
                 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&loop), 0, "every handle closed");
    cr_assert_eq(o.calls, 1, "the callback runs exactly once");
    return o;
}

Test(agent_exec, status_and_both_streams)
{
    const char *argv[] = {"/bin/sh", "-c", "echo out; echo err >&2; exit 3", NULL};
    outcome o = run(argv, NULL, 5000, 1024);
    cr_assert_eq(o.status, 3);
    cr_assert_eq(o.timed_out, 0);
    cr_assert(strstr(o.output, "out\n") && strstr(o.output, "err\n"), "%s", o.output);
}

Test(agent_exec, extra_environment_overrides)
{
    setenv("MRD_TEST_VAR", "inherited", 1);
    const char *argv[] = {"/bin/sh", "-c", "printf '%s %s' \"$MRD_TEST_VAR\" \"$OTHER\"", NULL};
    const char *env[] = {"MRD_TEST_VAR=given", "OTHER=x", NULL};
    outcome o = run(argv, env, 5000, 1024);
    cr_assert_eq(o.status, 0);
    cr_assert_str_eq(o.output, "given x");
}

Test(agent_exec, output_truncated_child_not_blocked)
{
    /* 1 MB of output through a 100-byte budget: the child must still finish */
    const char *argv[] = {"/bin/sh", "-c", "head -c 1000000 /dev/zero | tr '\\0' x; exit 0", NULL};
    outcome o = run(argv, NULL, 10000, 100);
    cr_assert_eq(o.status, 0);
    cr_assert_eq(strlen(o.output), 100);
}

Test(agent_exec, long_output_keeps_head_and_tail)
{
    const char *argv[] = {"/bin/sh", "-c",
                          "echo START; head -c 10000 /dev/zero | tr '\\0' x; echo; echo END", NULL};
    outcome o = run(argv, NULL, 10000, 100);
    cr_assert_eq(o.status, 0);
    cr_assert_eq(strlen(o.output), 100);
    cr_assert_eq(strncmp(o.output, "START\n", 6), 0, "%s", o.output);
    cr_assert(strstr(o.output, "\n...\n") != NULL, "%s", o.output);
    cr_assert_str_eq(o.output + 100 - 5, "\nEND\n", "%s", o.output);
}

Test(agent_exec, timeout_kills_the_process_group)
{
    char pidfile[] = "/tmp/mrd-exec-XXXXXX";
    int fd = mkstemp(pidfile);
    cr_assert_geq(fd, 0);
    close(fd);
    char script[256];
    /* a grandchild that would outlive its parent if only the parent died */
    snprintf(script, sizeof(script), "sleep 30 & echo $! > %s; wait", pidfile);
    const char *argv[] = {"/bin/sh", "-c", script, NULL};
    outcome o = run(argv, NULL, 200, 1024);
    cr_assert_eq(o.timed_out, 1);
    cr_assert_eq(o.status, -1);
    FILE *f = fopen(pidfile, "r");
    cr_assert_not_null(f);
    int gpid = 0;
    cr_assert_eq(fscanf(f, "%d", &gpid), 1);
    fclose(f);
    unlink(pidfile);
    /* the grandchild got SIGKILL too (it may linger as a zombie until its
     * reaper runs: wait for it to be gone or a zombie, bounded) */
    int gone = 0;
    for (int i = 0; i < 100 && !gone; i++) {
        char path[64], state = '?';
        snprintf(path, sizeof(path), "/proc/%d/stat", gpid);
        FILE *s = fopen(path, "r");
        if (!s) {
            gone = 1;
            break;
        }
        if (fscanf(s, "%*d %*s %c", &state) == 1 && (state == 'Z' || state == 'X'))
            gone = 1;
        fclose(s);
        if (!gone)
            usleep(20000);
    }
    cr_assert(gone, "grandchild %d still running after the timeout", gpid);
}

Test(agent_exec, missing_program)
{
    const char *argv[] = {"/nonexistent/program", NULL};
    outcome o = run(argv, NULL, 1000, 1024);
    cr_assert_eq(o.status, -2);
    cr_assert(strstr(o.output, "cannot start /nonexistent/program"), "%s", o.output);
}

Test(agent_exec, empty_argv_refused)
{
    uv_loop_t loop;
    outcome o;
    memset(&o, 0, sizeof(o));
    uv_loop_init(&loop);
    const char *argv[] = {NULL};
    cr_assert_eq(mrd__exec_start(&loop, argv, NULL, 1000, 10, on_exit_cb, &o, NULL), MRD_EINVAL);
    cr_assert_eq(mrd__exec_start(&loop, NULL, NULL, 1000, 10, on_exit_cb, &o, NULL), MRD_EINVAL);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(o.calls, 0);
    cr_assert_eq(uv_loop_close(&loop), 0);
}
