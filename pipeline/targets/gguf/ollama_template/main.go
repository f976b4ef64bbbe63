// Renders an Ollama Modelfile TEMPLATE with Go's text/template, the engine Ollama itself uses.
//
// stdin: {"template": "...", "conversations": [[{"role": "user", "content": "..."}], ...]}
// stdout: a JSON list with the rendered prompt of each conversation.
// The template sees what Ollama gives it: .Messages (each with .Role and .Content), .System and .Prompt.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/template"
)

type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type Values struct {
	Messages []Message
	System   string
	Prompt   string
	Response string
}

type Request struct {
	Template      string      `json:"template"`
	Conversations [][]Message `json:"conversations"`
}

func values(messages []Message) Values {
	v := Values{Messages: messages}
	for _, m := range messages {
		switch m.Role {
		case "system":
			v.System = m.Content
		case "user":
			v.Prompt = m.Content
		}
	}
	return v
}

func main() {
	var request Request
	if err := json.NewDecoder(os.Stdin).Decode(&request); err != nil {
		fmt.Fprintln(os.Stderr, "reading the request:", err)
		os.Exit(2)
	}
	tmpl, err := template.New("TEMPLATE").Option("missingkey=zero").Parse(request.Template)
	if err != nil {
		fmt.Fprintln(os.Stderr, "parsing the template:", err)
		os.Exit(1)
	}
	rendered := make([]string, 0, len(request.Conversations))
	for _, conversation := range request.Conversations {
		var out strings.Builder
		if err := tmpl.Execute(&out, values(conversation)); err != nil {
			fmt.Fprintln(os.Stderr, "rendering the template:", err)
			os.Exit(1)
		}
		rendered = append(rendered, out.String())
	}
	json.NewEncoder(os.Stdout).Encode(rendered)
}
