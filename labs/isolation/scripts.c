/*
 * scripts.c — Hermitage's PostgreSQL tests (github.com/ept/hermitage, postgres.md) as data: which
 * session runs which statement, in order, and which reads would show the anomaly. Nothing here
 * says what PostgreSQL will do: the driver runs the steps and the cell is decided from what came
 * back. Table test starts as (1, 10), (2, 20) before every cell.
 *
 * Where Hermitage's script writes constants (P4: both write 11), the lab keeps its steps but reads
 * the writes as "add one to what I read": both committed and the row at 11, not 12, is the lost
 * update. G2-item and G2 decide on what each read: both saw the state before the other's write,
 * and both committed, is the cycle.
 */
#include "internal.h"

const char *const iso_level_names[ISO_LEVELS] = {"READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE"};
const char *const iso_test_names[ISO_TESTS] = {"G0",  "G1a", "G1b",      "G1c",     "OTV",
                                               "PMP", "P4",  "G-single", "G2-item", "G2"};
const char *const iso_test_titles[ISO_TESTS] = {"dirty write",
                                                "aborted read",
                                                "intermediate read",
                                                "circular information flow",
                                                "observed txn vanishes",
                                                "predicate-many-preceders",
                                                "lost update",
                                                "read skew",
                                                "write skew",
                                                "anti-dependency cycle"};

/* Hermitage README, "Summary of test results", PostgreSQL rows: ✓ = true, — = false */
const bool iso_hermitage[ISO_TESTS][ISO_LEVELS] = {
        /*           RC     RR     SER */
        /* G0 */ {true, true, true},
        /* G1a */ {true, true, true},
        /* G1b */ {true, true, true},
        /* G1c */ {true, true, true},
        /* OTV */ {true, true, true},
        /* PMP */ {false, true, true},
        /* P4 */ {false, true, true},
        /* G-single */ {false, true, true},
        /* G2-item */ {false, false, true},
        /* G2 */ {false, false, true},
};

#define R   STEP_READ
#define ALL "select id, value from test order by id"

const struct iso_script iso_scripts[ISO_TESTS] = {
        /* G0: T2 writes a row T1 wrote and has not committed */
        {2,
         RULE_ANY,
         NULL,
         7,
         {{0, "update test set value = 11 where id = 1", 0, NULL},
          {1, "update test set value = 12 where id = 1", STEP_MUST_WAIT, NULL},
          {0, "update test set value = 21 where id = 2", 0, NULL},
          {0, "commit", 0, NULL},
          {0, ALL, R, NULL},
          {1, "update test set value = 22 where id = 2", 0, NULL},
          {1, "commit", 0, NULL}}},
        /* G1a: T2 must never see T1's write, T1 aborts */
        {2,
         RULE_ANY,
         NULL,
         5,
         {{0, "update test set value = 101 where id = 1", 0, NULL},
          {1, ALL, R, "1=>101,2=>20"},
          {0, "rollback", 0, NULL},
          {1, ALL, R, "1=>101,2=>20"},
          {1, "commit", 0, NULL}}},
        /* G1b: T2 must never see T1's intermediate value 101 */
        {2,
         RULE_ANY,
         NULL,
         6,
         {{0, "update test set value = 101 where id = 1", 0, NULL},
          {1, ALL, R, "1=>101,2=>20"},
          {0, "update test set value = 11 where id = 1", 0, NULL},
          {0, "commit", 0, NULL},
          {1, ALL, R, "1=>101,2=>20"},
          {1, "commit", 0, NULL}}},
        /* G1c: each reads the other's uncommitted write */
        {2,
         RULE_ANY,
         NULL,
         6,
         {{0, "update test set value = 11 where id = 1", 0, NULL},
          {1, "update test set value = 22 where id = 2", 0, NULL},
          {0, "select id, value from test where id = 2", R, "2=>22"},
          {1, "select id, value from test where id = 1", R, "1=>11"},
          {0, "commit", 0, NULL},
          {1, "commit", 0, NULL}}},
        /* OTV: T3 saw T1's write to 1, then must not find T1's write to 2 gone */
        {3,
         RULE_ANY,
         NULL,
         11,
         {{0, "update test set value = 11 where id = 1", 0, NULL},
          {0, "update test set value = 19 where id = 2", 0, NULL},
          {1, "update test set value = 12 where id = 1", 0, NULL},
          {0, "commit", 0, NULL},
          {2, "select id, value from test where id = 1", R, NULL},
          {1, "update test set value = 18 where id = 2", 0, NULL},
          {2, "select id, value from test where id = 2", R, "2=>20"},
          {1, "commit", 0, NULL},
          {2, "select id, value from test where id = 2", R, "2=>20"},
          {2, "select id, value from test where id = 1", R, "1=>10"},
          {2, "commit", 0, NULL}}},
        /* PMP: T1's second predicate read must not find T2's insert */
        {2,
         RULE_ANY,
         NULL,
         5,
         {{0, "select id, value from test where value = 30", R, NULL},
          {1, "insert into test (id, value) values (3, 30)", 0, NULL},
          {1, "commit", 0, NULL},
          {0, "select id, value from test where value % 3 = 0", R, "3=>30"},
          {0, "commit", 0, NULL}}},
        /* P4: both read 10 and write 10 + 1; both committed and 11 is one increment lost */
        {2,
         RULE_ANY,
         "1=>11,2=>20",
         6,
         {{0, "select id, value from test where id = 1", R, NULL},
          {1, "select id, value from test where id = 1", R, NULL},
          {0, "update test set value = 11 where id = 1", 0, NULL},
          {1, "update test set value = 11 where id = 1", 0, NULL},
          {0, "commit", 0, NULL},
          {1, "commit", 0, NULL}}},
        /* G-single: T1 read 1 => 10 before T2 moved 2 from 1 to 2; it must not read 2 => 18 */
        {2,
         RULE_ANY,
         NULL,
         8,
         {{0, "select id, value from test where id = 1", R, NULL},
          {1, "select id, value from test where id = 1", R, NULL},
          {1, "select id, value from test where id = 2", R, NULL},
          {1, "update test set value = 12 where id = 1", 0, NULL},
          {1, "update test set value = 18 where id = 2", 0, NULL},
          {1, "commit", 0, NULL},
          {0, "select id, value from test where id = 2", R, "2=>18"},
          {0, "commit", 0, NULL}}},
        /* G2-item: both read both rows, each writes the other one; both commit */
        {2,
         RULE_ALL_COMMITTED,
         NULL,
         6,
         {{0, "select id, value from test where id in (1, 2) order by id", R, "1=>10,2=>20"},
          {1, "select id, value from test where id in (1, 2) order by id", R, "1=>10,2=>20"},
          {0, "update test set value = 11 where id = 1", 0, NULL},
          {1, "update test set value = 21 where id = 2", 0, NULL},
          {0, "commit", 0, NULL},
          {1, "commit", 0, NULL}}},
        /* G2: both find no row with value % 3 = 0, each inserts one; both commit */
        {2,
         RULE_ALL_COMMITTED,
         NULL,
         6,
         {{0, "select id, value from test where value % 3 = 0", R, "(none)"},
          {1, "select id, value from test where value % 3 = 0", R, "(none)"},
          {0, "insert into test (id, value) values (3, 30)", 0, NULL},
          {1, "insert into test (id, value) values (4, 42)", 0, NULL},
          {0, "commit", 0, NULL},
          {1, "commit", 0, NULL}}},
};
