/*
 * docs.h — a lab's docs page (docs/<lab>.md) read as the drill needs it. The page is the one
 * source of the question, the answer, the follow-ups and the story: nothing here copies its text.
 *
 * Every page has the same shape (the parser refuses one that does not):
 *
 *   # lab-<name>
 *   > "The interview question, on one or more > lines?"
 *   ## The model answer                      paragraphs and "- " bullets (code blocks, tables)
 *   ## Follow-ups an interviewer pulls on    "- **The follow-up?** Its answer ..." bullets
 *   ## The production story                  paragraphs
 *
 * A section runs from its heading to the next "## " heading outside a code block.
 *
 * Key points, what a person re-reads in 30 seconds after answering out loud: one point per
 * block of the model answer (a paragraph or a bullet), the block's first sentence, or the whole
 * block when it is short (DOCS_POINT_WHOLE characters). A first sentence that is short
 * (DOCS_SENTENCE_SHORT) or only a bold label ("**Write-through.**", "**URL path** (`/v1`, ...).")
 * takes the next sentence with it, since alone it names a point without making it. A paragraph states a claim
 * and the sentences after it argue it; the drill shows the claims, the page keeps the argument. Bullets that
 * follow a paragraph are its list (level 1); code blocks and tables are left to the page.
 */
#ifndef SUITE_DOCS_H
#define SUITE_DOCS_H

#include <stddef.h>

#define DOCS_ANSWER    "## The model answer"
#define DOCS_FOLLOWUPS "## Follow-ups an interviewer pulls on"
#define DOCS_STORY     "## The production story"

/* A block of a section longer than this gives its first sentence only (about two lines). */
#define DOCS_POINT_WHOLE 160
/* A first sentence shorter than this (under a line: "The pool's size is the API's ceiling.") is
 * a claim without its content, and takes the next sentence with it. */
#define DOCS_SENTENCE_SHORT 80

/* One key point or paragraph: markdown on one line (the page's line breaks joined by spaces). */
struct docs_point {
	char *text;
	int level; /* 0, or 1 for a bullet under a paragraph */
};

struct docs_page {
	char *question;            /* inside the quotes of the > "..." line(s) */
	struct docs_point *points; /* key points of the model answer */
	size_t npoints;
	char **followups; /* the bold question that leads each follow-up bullet */
	size_t nfollowups;
	struct docs_point *story; /* the production story's paragraphs (and bullets) */
	size_t nstory;
};

/* Parses a page's text. 0, or -1 with err saying what is missing; page is then empty. */
int docs_parse(const char *text, struct docs_page *page, char *err, size_t errlen);

/* Reads dir/<lab>.md and parses it. 0, or -1 with err naming the file. */
int docs_load(const char *dir, const char *lab, struct docs_page *page, char *err, size_t errlen);

void docs_free(struct docs_page *page);

/* The body of the section headed by `heading` (a whole line), malloc'd; NULL when absent. */
char *docs_section(const char *text, const char *heading);

/* Length of the first sentence of md (markdown on one line), the label rule above included. */
size_t docs_first_sentence(const char *md);

#endif
