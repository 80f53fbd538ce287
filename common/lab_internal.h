/*
 * lab_internal.h — what lab.c and lab_args.c share and no lab needs.
 */
#ifndef LAB_INTERNAL_H
#define LAB_INTERNAL_H
#include <stdio.h>

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
/* The same, with the usage (--help) written to out and every complaint to err instead of stdout
 * and stderr: the flag parser's fuzz harness (fuzz/fuzz_lab_args.c) keeps them off its output. */
int lab_parse_args_to(struct lab *lab, int argc, char **argv, FILE *out, FILE *err);

/* What lab_init_flags sets before it parses argv: *lab zeroed, then the name, question, phase
 * count, flags and the default options (seed, server URLs); narration on stdout. */
void lab_init_defaults(struct lab *lab, const char *name, const char *question, int phase_count,
                       const struct lab_flag *flags, int nflags);

/* --predict (lab_predict.c), called by the teller's hooks around phase def. */
void lab_question_ask(struct lab *lab, const struct lab_phase_def *def, const void *cfg);
void lab_question_answer(struct lab *lab, const struct lab_phase_def *def, const void *cfg,
                         const void *result);
/* The score line before the verdict (with --predict), and the document's "score" (null without). */
void lab_predict_score(struct lab *lab);
json_t *lab_predict_score_json(const struct lab *lab);
#endif
