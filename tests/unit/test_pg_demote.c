/* Unit tests of the pure parts of the demote fence (agent/pg_demote.h):
 * the postmaster's PID from postmaster.pid, /proc/<pid>/stat lines (with
 * hostile process names), and which process states count as gone. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "meridian/error.h"
#include "pg_demote.h"

Test(pg_demote, pid_file_line_one)
{
    /* the layout PostgreSQL writes: pid, data dir, start time, port, ... */
    cr_assert_eq(mrd__pg_pid_parse("12345\n/tmp/data\n1700000000\n5432\n"), 12345);
    cr_assert_eq(mrd__pg_pid_parse("77"), 77);
    cr_assert_eq(mrd__pg_pid_parse("77\r\n"), 77);
    cr_assert_eq(mrd__pg_pid_parse(""), 0);
    cr_assert_eq(mrd__pg_pid_parse("\n12\n"), 0);
    cr_assert_eq(mrd__pg_pid_parse("-12\n"), 0);
    cr_assert_eq(mrd__pg_pid_parse("1\n"), 0); /* never signal init */
    cr_assert_eq(mrd__pg_pid_parse("12abc\n"), 0);
    cr_assert_eq(mrd__pg_pid_parse("99999999999999\n"), 0);
    cr_assert_eq(mrd__pg_pid_parse(NULL), 0);
}

Test(pg_demote, proc_stat_fields)
{
    mrd__proc_stat st;
    const char *line = "4242 (postgres) T 4200 4242 4242 0 -1 4194560 1234 0 0 0 5 3 0 0 20 0 1 0 "
                       "987654 222 333 18446744073709551615\n";
    cr_assert_eq(mrd__proc_stat_parse(line, &st), 0);
    cr_assert_eq(st.pid, 4242);
    cr_assert_eq(st.state, 'T');
    cr_assert_eq(st.ppid, 4200);
    cr_assert_eq(st.starttime, 987654);
}

Test(pg_demote, proc_stat_hostile_comm)
{
    mrd__proc_stat st;
    /* a name with spaces and ") Z 1": the last ')' ends it */
    const char *line = "17 (a b) Z 1 (x) S 99 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 555 0 0\n";
    cr_assert_eq(mrd__proc_stat_parse(line, &st), 0);
    cr_assert_eq(st.state, 'S');
    cr_assert_eq(st.ppid, 99);
    cr_assert_eq(st.starttime, 555);
}

Test(pg_demote, proc_stat_malformed)
{
    mrd__proc_stat st;
    cr_assert_eq(mrd__proc_stat_parse("", &st), MRD_EPARSE);
    cr_assert_eq(mrd__proc_stat_parse("12 postgres S 1 2 3", &st), MRD_EPARSE);
    cr_assert_eq(mrd__proc_stat_parse("12 (p) S 1 2 3\n", &st), MRD_EPARSE); /* too short */
    cr_assert_eq(mrd__proc_stat_parse("x (p) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5\n", &st),
                 MRD_EPARSE);
    cr_assert_eq(mrd__proc_stat_parse("12 (p) SS 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5\n", &st),
                 MRD_EPARSE);
    cr_assert_eq(mrd__proc_stat_parse(NULL, &st), MRD_EPARSE);
}

Test(pg_demote, gone_states)
{
    cr_assert(mrd__proc_state_gone('Z'));
    cr_assert(mrd__proc_state_gone('X'));
    cr_assert(mrd__proc_state_gone('x'));
    cr_assert_not(mrd__proc_state_gone('T')); /* stopped: runs again on SIGCONT */
    cr_assert_not(mrd__proc_state_gone('t'));
    cr_assert_not(mrd__proc_state_gone('S'));
    cr_assert_not(mrd__proc_state_gone('D'));
    cr_assert_not(mrd__proc_state_gone('R'));
}

Test(pg_demote, own_proc_stat_parses)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)getpid());
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    mrd__proc_stat st;
    cr_assert_eq(mrd__proc_stat_parse(buf, &st), 0);
    cr_assert_eq(st.pid, (int)getpid());
    cr_assert_eq(st.ppid, (int)getppid());
    cr_assert(st.state == 'R' || st.state == 'S');
    cr_assert_gt(st.starttime, 0);
}

Test(pg_demote, socket_lock_of_pid_file)
{
    char buf[256];
    const char *pf = "4242\n/tmp/d/data\n1700000000\n5433\n/tmp/d\n127.0.0.1\n  5433001  "
                     "32768\nready   \n";
    cr_assert_eq(mrd__pg_pid_socket_lock(pf, buf, sizeof(buf)), 0);
    cr_assert_str_eq(buf, "/tmp/d/.s.PGSQL.5433.lock");
    cr_assert_eq(mrd__pg_pid_socket_lock("1\n/d\n1\n5433\n\n*\n", buf, sizeof(buf)), MRD_ENOTFOUND);
    cr_assert_eq(mrd__pg_pid_socket_lock("1\n/d\n1\n54x3\n/s\n", buf, sizeof(buf)), MRD_EPARSE);
    cr_assert_eq(mrd__pg_pid_socket_lock("1\n/d\n1\n5433\nrel\n", buf, sizeof(buf)), MRD_EPARSE);
    cr_assert_eq(mrd__pg_pid_socket_lock("1\n/d\n", buf, sizeof(buf)), MRD_EPARSE);
    cr_assert_eq(mrd__pg_pid_socket_lock(pf, buf, 8), MRD_EPARSE);
}
