/*
 * lab_internal.h — what lab.c and lab_args.c share and no lab needs.
 */
#ifndef LAB_INTERNAL_H
#define LAB_INTERNAL_H
#include "lab.h"

/* Seed when --seed is not given: the same numbers on every run, so two runs compare. */
#define LAB_SEED_DEFAULT 1

/* The lab's name, or "lab" before it has one. */
static inline const char *lab_name(const struct lab *lab)
{
	return lab->name ? lab->name : "lab";
}

/*
 * Parses argv into lab->opts and the lab's own flags. 0 to go on; -1 when the program should exit
 * now with lab->exit_code: 0 after --help (usage on stdout), 2 after a bad flag or value (one line
 * naming it and the usage on stderr).
 */
int lab_parse_args(struct lab *lab, int argc, char **argv);
#endif
