/*
 * questions.h — what lab-pooling's --predict asks before each phase (questions.c), named by the
 * phase list in pooling.c. Each reads struct pooling_config and struct pooling_result.
 */
#ifndef LAB_POOLING_QUESTIONS_H
#define LAB_POOLING_QUESTIONS_H

#include "lab.h"

extern const struct lab_question POOLING_Q_COMPARE;         /* phase 1: what a pool buys, a choice */
extern const struct lab_question POOLING_Q_EXHAUSTION;      /* phase 2: Little's law, requests/s */
extern const struct lab_question POOLING_Q_LEAK;            /* phase 3: 404s before the pool is drained */
extern const struct lab_question POOLING_Q_MAX_CONNECTIONS; /* phase 4: instances that open their pool */

#endif
