// Package mapper turns a directory snapshot into one access decision per
// user (Map) and compares decisions with what is published (Diff). Map is a
// pure function: no I/O, no clock, no globals; the rules it applies are the
// README's "Decision rules".
package mapper
