package main

import "errors"

func runLab(args []string) error {
	return errors.New("lab: not built yet")
}
