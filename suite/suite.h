/*
 * suite.h — the suite's runner, one program (`build/labsuite`) for what spans every lab:
 *
 *   labsuite labs   [--bin DIR] [--jobs N] [--timeout S] LAB...   each lab with --quick --json,
 *                                                                 one screen
 *   labsuite report [--bin DIR] [--out DIR] [--timeout S] LAB...  one HTML page of every lab's proofs
 *   labsuite drill  [--bin DIR] [--docs DIR] [LAB]  one interview question, your answer, the proof
 *
 * The Makefile's `make labs`, `make report` and `make drill` call it with the labs it found.
 * Each subcommand returns the process's exit code: 0 all good, 1 a lab's verdict failed, 2 bad
 * usage or a missing part (a lab program, a docs page, the browser).
 */
#ifndef SUITE_SUITE_H
#define SUITE_SUITE_H

int suite_labs(int argc, char **argv);   /* labs.c */
int suite_report(int argc, char **argv); /* report.c */
int suite_drill(int argc, char **argv);  /* drill.c */

#endif
