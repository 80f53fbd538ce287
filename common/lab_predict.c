/*
 * lab_predict.c — --predict: before a phase shows its numbers, ask the question whose answer the
 * phase measures (struct lab_question, data beside the phase in <lab>.c); after its table, show
 * the guess beside the measurement and whether it was within the stated margin; at the end, the
 * score. Without --predict the measured answers are still recorded, so the --json document (and
 * `make report`) carries every question with its answer.
 *
 * The questions are asked on the terminal: stdin must be one (lab_parse_args refuses --predict
 * otherwise). An empty line or Ctrl-D skips a question; an answer that is not one (letters for a
 * number, "d" of three choices) asks again. With --json the dialogue goes to stderr, so stdout
 * still carries only the document.
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lab.h"
#include "lab_internal.h"

#define QUESTION_LEN 512

/* Where the dialogue goes: the lab's narration, or stderr beside --json's document. */
static struct term dialogue_term(const struct lab *lab)
{
	if (!lab->opts.json)
		return lab->term;
	struct term t;
	term_init(&t, stderr);
	return t;
}

/* The question's text with each {} replaced by given(cfg, i), as a person writes a number. */
static void question_text(const struct lab_question *q, const void *cfg, char *buf, size_t len)
{
	size_t n = 0;
	int arg = 0;
	buf[0] = '\0';
	for (const char *p = q->text ? q->text : ""; *p && n + 1 < len; p++) {
		if (p[0] == '{' && p[1] == '}' && q->given) {
			double v = q->given(cfg, arg++);
			int dp = fabs(v - round(v)) < 1e-9 ? 0 : 2;
			int w = snprintf(buf + n, len - n, "%s", TERM_NUM(v, dp));
			n += w > 0 ? (size_t)w : 0;
			if (n >= len)
				n = len - 1;
			p++;
		} else {
			buf[n++] = *p;
			buf[n] = '\0';
		}
	}
}

/* A value as the reveal shows it: whole numbers without decimals, others with two or one. */
static const char *value_text(char *buf, double v)
{
	int dp = fabs(v - round(v)) < 1e-9 ? 0 : fabs(v) < 10 ? 2 : 1;
	snprintf(buf, TERM_FMT_LEN, "%s", TERM_NUM(v, dp));
	return buf;
}
#define VALUE(v) value_text((char[TERM_FMT_LEN]){0}, (v))

static int choice_count(const struct lab_question *q)
{
	int n = 0;
	while (n < LAB_CHOICES_MAX && q->choices[n])
		n++;
	return n;
}

/* The margin in words: "exactly", "±10%", "±2", "±10% or ±2". */
static void margin_text(const struct lab_question *q, char *buf, size_t len)
{
	if (q->within_pct > 0 && q->within > 0)
		snprintf(buf, len, "±%g%% or ±%s", q->within_pct, VALUE(q->within));
	else if (q->within_pct > 0)
		snprintf(buf, len, "±%g%%", q->within_pct);
	else if (q->within > 0)
		/* an absolute margin on a percentage is in points: "±10 points", not "±10%" */
		snprintf(buf, len, "±%s%s", VALUE(q->within),
		         q->unit && !strcmp(q->unit, "%") ? " points" : "");
	else
		snprintf(buf, len, "exactly");
}

/*
 * A number as typed: digits with optional sign, point, exponent and commas grouping thousands
 * or underscores; nothing else but spaces (and a "%" when the unit is one). 0 and *out, or -1.
 */
static int parse_number(const char *line, const char *unit, double *out)
{
	char clean[128];
	size_t n = 0;
	for (const char *p = line; *p && n + 1 < sizeof(clean); p++) {
		/* a comma groups thousands (1,000) and nothing else: "0,5" is not a number here */
		if (*p == ',' && !(isdigit((unsigned char)p[1]) && isdigit((unsigned char)p[2]) &&
		                   isdigit((unsigned char)p[3]) && !isdigit((unsigned char)p[4])))
			return -1;
		if (*p != ',' && *p != '_')
			clean[n++] = *p;
	}
	clean[n] = '\0';
	const char *s = clean;
	while (isspace((unsigned char)*s))
		s++;
	/* strtod alone would take "nan", "inf" and "0x1p3" */
	if (!(isdigit((unsigned char)*s) || *s == '.' || *s == '-' || *s == '+') || strpbrk(s, "xXnNiI"))
		return -1;
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (end == s || errno == ERANGE || !isfinite(v))
		return -1;
	if (*end == '%' && unit && !strcmp(unit, "%"))
		end++;
	while (isspace((unsigned char)*end))
		end++;
	if (*end)
		return -1;
	*out = v;
	return 0;
}

/* One letter of the choices shown, "b" or "B)", as its index; -1 otherwise. */
static int parse_choice(const char *line, int nchoices)
{
	while (isspace((unsigned char)*line))
		line++;
	int c = tolower((unsigned char)line[0]);
	if (c < 'a' || c >= 'a' + nchoices)
		return -1;
	const char *rest = line + 1;
	if (*rest == ')')
		rest++;
	while (isspace((unsigned char)*rest))
		rest++;
	return *rest ? -1 : c - 'a';
}

/*
 * Asks until the answer is one: 1 and *guess, or 0 when skipped (an empty line, Ctrl-D). The
 * line is read from stdin, which lab_parse_args checked is a terminal.
 */
static int read_guess(const struct term *t, const struct lab_question *q, double *guess)
{
	int nchoices = choice_count(q);
	char *line = NULL;
	size_t cap = 0;
	int ret = 0;
	for (;;) {
		term_printf(t, "  %s>%s ", term_bold(t), term_reset(t));
		if (t->out)
			fflush(t->out);
		ssize_t got = getline(&line, &cap, stdin);
		if (got < 0) {
			/* Ctrl-D: this question is skipped, the next one is asked again */
			clearerr(stdin);
			term_printf(t, "\n");
			break;
		}
		line[strcspn(line, "\r\n")] = '\0';
		if (strspn(line, " \t") == strlen(line))
			break;
		if (q->kind == LAB_ANSWER_CHOICE) {
			int c = parse_choice(line, nchoices);
			if (c >= 0) {
				*guess = c;
				ret = 1;
				break;
			}
			term_printf(t, "  %sone letter, a to %c (Enter skips)%s\n", term_dim(t),
			            'a' + nchoices - 1, term_reset(t));
		} else {
			if (parse_number(line, q->unit, guess) == 0) {
				ret = 1;
				break;
			}
			term_printf(t, "  %sa number, like 250 or 1,000 or 0.5 (Enter skips)%s\n",
			            term_dim(t), term_reset(t));
		}
	}
	free(line);
	return ret;
}

/* The question's entry in the document: text, kind, unit or choices, margin. NULL on OOM. */
static json_t *question_json(const struct lab_phase_def *def, const char *text)
{
	const struct lab_question *q = def->question;
	json_t *e = json_pack("{s:s,s:s,s:s}", "phase", def->name ? def->name : "", "question", text, "kind",
	                      q->kind == LAB_ANSWER_CHOICE ? "choice" : "number");
	if (!e)
		return NULL;
	if (q->kind == LAB_ANSWER_CHOICE) {
		json_t *choices = json_array();
		for (int i = 0; i < choice_count(q); i++)
			json_array_append_new(choices, json_string(q->choices[i]));
		json_object_set_new(e, "choices", choices);
	} else {
		json_object_set_new(e, "unit", json_string(q->unit ? q->unit : ""));
		json_object_set_new(e, "within", json_real(q->within));
		json_object_set_new(e, "within_pct", json_real(q->within_pct));
	}
	json_object_set_new(e, "guess", json_null());
	return e;
}

void lab_question_ask(struct lab *lab, const struct lab_phase_def *def, const void *cfg)
{
	const struct lab_question *q = def->question;
	if (!q || !lab->questions)
		return;
	char text[QUESTION_LEN];
	question_text(q, cfg, text, sizeof(text));
	json_t *e = question_json(def, text);
	if (!e || json_array_append_new(lab->questions, e) < 0)
		return;
	if (!lab->opts.predict)
		return;
	struct term t = dialogue_term(lab);
	lab->asked++;
	/* with --json the phase's title went nowhere: name the phase on the dialogue's screen */
	if (lab->opts.json)
		term_printf(&t, "\n%s[%d/%d] %s%s\n", term_bold(&t), lab->phase_no, lab->phase_count,
		            def->name ? def->name : "", term_reset(&t));
	term_printf(&t, "  %s? %s%s", term_bold(&t), text, term_reset(&t));
	if (q->kind == LAB_ANSWER_NUMBER)
		term_printf(&t, "  %s(%s; Enter skips)%s\n", term_dim(&t), q->unit ? q->unit : "a number",
		            term_reset(&t));
	else {
		term_printf(&t, "  %s(Enter skips)%s\n", term_dim(&t), term_reset(&t));
		for (int i = 0; i < choice_count(q); i++)
			term_printf(&t, "      %c) %s\n", 'a' + i, q->choices[i]);
	}
	double guess;
	if (read_guess(&t, q, &guess) == 1) {
		lab->answered++;
		json_object_set_new(e, "guess", json_real(guess));
	}
}

/* Whether guess counts as measured, by the question's margin. */
static bool guess_right(const struct lab_question *q, double guess, double measured)
{
	if (q->kind == LAB_ANSWER_CHOICE)
		return lround(guess) == lround(measured);
	double margin = fmax(q->within, q->within_pct / 100.0 * fabs(measured));
	return fabs(guess - measured) <= margin + 1e-9 * fmax(1.0, fabs(measured));
}

/* "b (the batched load)" or "101 statements". */
static void answer_text(const struct lab_question *q, double v, char *buf, size_t len)
{
	if (q->kind == LAB_ANSWER_CHOICE) {
		long i = lround(v);
		snprintf(buf, len, "%c (%s)", (char)('a' + i),
		         i >= 0 && i < choice_count(q) ? q->choices[i] : "?");
	} else {
		/* "101 statements", but "47.5%" */
		bool pct = q->unit && !strcmp(q->unit, "%");
		snprintf(buf, len, "%s%s%s", VALUE(v), q->unit && !pct ? " " : "", q->unit ? q->unit : "");
	}
}

void lab_question_answer(struct lab *lab, const struct lab_phase_def *def, const void *cfg,
                         const void *result)
{
	const struct lab_question *q = def->question;
	if (!q || !lab->questions || json_array_size(lab->questions) == 0)
		return;
	/* the entry lab_question_ask appended for this phase (none if it could not) */
	json_t *e = json_array_get(lab->questions, json_array_size(lab->questions) - 1);
	if (strcmp(json_string_value(json_object_get(e, "phase")), def->name ? def->name : ""))
		return;
	double measured = q->measured ? q->measured(cfg, result) : NAN;
	bool decided = isfinite(measured) &&
	               (q->kind != LAB_ANSWER_CHOICE || (measured >= 0 && measured < choice_count(q)));
	json_object_set_new(e, "measured", decided ? json_real(measured) : json_null());
	if (q->kind == LAB_ANSWER_NUMBER) {
		char margin[64];
		margin_text(q, margin, sizeof(margin));
		json_object_set_new(e, "margin", json_string(margin));
	}
	json_t *g = json_object_get(e, "guess");
	bool guessed = json_is_number(g);
	bool right = guessed && decided && guess_right(q, json_number_value(g), measured);
	json_object_set_new(e, "right", guessed && decided ? json_boolean(right) : json_null());
	if (!lab->opts.predict)
		return;
	if (right)
		lab->right++;
	struct term t = dialogue_term(lab);
	char said[160], was[160], margin[64];
	if (!decided) {
		term_printf(&t, "  %s– this run did not decide it: left out of the score%s\n", term_dim(&t),
		            term_reset(&t));
		lab->asked--;
		if (guessed)
			lab->answered--;
		return;
	}
	answer_text(q, measured, was, sizeof(was));
	/* a choice "was" the answer; a number was measured */
	const char *verb = q->kind == LAB_ANSWER_CHOICE ? "it was" : "measured";
	if (!guessed) {
		term_printf(&t, "  %s–%s skipped · %s %s\n", term_dim(&t), term_reset(&t), verb, was);
	} else {
		double gv = json_number_value(g);
		answer_text(q, gv, said, sizeof(said));
		if (q->kind == LAB_ANSWER_CHOICE) {
			/* a right choice is said once; a wrong one beside the right one */
			if (right)
				term_printf(&t, "  %s✔%s you said %s · right\n", term_green(&t),
				            term_reset(&t), said);
			else
				term_printf(&t, "  %s✘%s you said %s · it was %s\n", term_red(&t),
				            term_reset(&t), said, was);
		} else if (q->within <= 0 && q->within_pct <= 0)
			snprintf(margin, sizeof(margin), right ? "exactly" : "off by %s",
			         VALUE(fabs(gv - measured)));
		else {
			char m[48];
			margin_text(q, m, sizeof(m));
			snprintf(margin, sizeof(margin), "%s %s", right ? "within" : "outside", m);
		}
		if (q->kind != LAB_ANSWER_CHOICE)
			term_printf(&t, "  %s%s%s you said %s · measured %s · %s\n",
			            right ? term_green(&t) : term_red(&t), right ? "✔" : "✘", term_reset(&t),
			            said, was, margin);
	}
	if (q->why)
		term_printf(&t, "    %s%s%s\n", term_dim(&t), q->why, term_reset(&t));
	if (t.out)
		fflush(t.out);
}

void lab_predict_score(struct lab *lab)
{
	if (!lab->opts.predict)
		return;
	struct term t = dialogue_term(lab);
	int skipped = lab->asked - lab->answered;
	term_printf(&t, "\n%sprediction score: %d of %d within tolerance%s", term_bold(&t), lab->right,
	            lab->asked, term_reset(&t));
	if (skipped > 0)
		term_printf(&t, " (%d skipped)", skipped);
	term_printf(&t, "\n");
	if (t.out)
		fflush(t.out);
}

json_t *lab_predict_score_json(const struct lab *lab)
{
	if (!lab->opts.predict)
		return json_null();
	return json_pack("{s:i,s:i,s:i}", "asked", lab->asked, "answered", lab->answered, "right",
	                 lab->right);
}
