//! `#[derive(Module)]`: implements `rustygradients_nn::Module` for a struct by visiting its
//! fields in declaration order. A `Tensor` field is a parameter named after the field; a field
//! holding a module (or a `Vec`, `Option` or array of them) is a child whose parameters get the
//! field's name as a dotted prefix (`h.0.attn.c_attn.weight`, as in PyTorch). Train/eval mode
//! reaches every child by construction.
//!
//! Field attributes:
//! - `#[module(skip)]`: not part of the module (settings, caches, anything else);
//! - `#[module(rename = "transformer.wte")]`: the name used instead of the field's;
//! - `#[module(kind = "norm")]` on a tensor: its `ParamKind` (`weight`, `bias`, `norm`,
//!   `embedding`); by default a field named `bias` is a bias and any other a weight.
//!
//! Plain numbers, `bool` and `String` fields need no attribute: they are visited as nothing.

#![warn(missing_docs)]

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as Tokens};
use quote::quote;
use syn::{parse_macro_input, Data, DeriveInput, Fields, LitStr};

/// Implements `Module` (its `visit` and `visit_mut`) for a struct with named or tuple fields,
/// visiting the fields in declaration order; tuple fields are named `0`, `1`, …. Each visited
/// field's type must implement `ModuleField` (a tensor, a module, or a `Vec`, `Option` or array
/// of them; numbers, `bool` and `String` visit as nothing); anything else takes
/// `#[module(skip)]`. A generic struct keeps its own bounds (e.g. `T: Module`); the derive
/// adds none.
///
/// Field attributes, combinable as `#[module(rename = "wte", kind = "embedding")]`:
/// - `skip`: the field is not part of the module;
/// - `rename = "name"`: the name used instead of the field's (dots allowed, as in
///   `"transformer.wte"`);
/// - `kind = "weight" | "bias" | "norm" | "embedding"`: the `ParamKind` of a tensor field (the
///   default is `bias` for a field named `bias`, else `weight`), which decides e.g. whether
///   `decay_groups` decays it.
///
/// Enums and unions are a compile error, as is an unknown attribute or kind.
#[proc_macro_derive(Module, attributes(module))]
pub fn derive_module(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match expand(&input) {
        Ok(t) => t.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// The path of the nn crate as the deriving crate sees it.
fn nn_path() -> Tokens {
    use proc_macro_crate::{crate_name, FoundCrate};
    let named = |name: &str| syn::Ident::new(&name.replace('-', "_"), Span::call_site());
    match crate_name("rustygradients-nn") {
        // The nn crate itself names itself with `extern crate self as rustygradients_nn`.
        Ok(FoundCrate::Itself) => quote!(::rustygradients_nn),
        Ok(FoundCrate::Name(n)) => {
            let n = named(&n);
            quote!(::#n)
        }
        Err(_) => match crate_name("rustygradients") {
            Ok(FoundCrate::Name(n)) => {
                let n = named(&n);
                quote!(::#n::nn)
            }
            _ => quote!(::rustygradients::nn),
        },
    }
}

struct FieldAttrs {
    skip: bool,
    rename: Option<String>,
    kind: Option<String>,
}

fn field_attrs(field: &syn::Field) -> syn::Result<FieldAttrs> {
    let mut out = FieldAttrs {
        skip: false,
        rename: None,
        kind: None,
    };
    for attr in field.attrs.iter().filter(|a| a.path().is_ident("module")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("skip") {
                out.skip = true;
            } else if meta.path.is_ident("rename") {
                out.rename = Some(meta.value()?.parse::<LitStr>()?.value());
            } else if meta.path.is_ident("kind") {
                let kind = meta.value()?.parse::<LitStr>()?;
                if !["weight", "bias", "norm", "embedding"].contains(&kind.value().as_str()) {
                    return Err(syn::Error::new(
                        kind.span(),
                        "kind must be \"weight\", \"bias\", \"norm\" or \"embedding\"",
                    ));
                }
                out.kind = Some(kind.value());
            } else {
                return Err(meta.error("expected `skip`, `rename = \"...\"` or `kind = \"...\"`"));
            }
            Ok(())
        })?;
    }
    Ok(out)
}

fn expand(input: &DeriveInput) -> syn::Result<Tokens> {
    let nn = nn_path();
    let name = &input.ident;
    let Data::Struct(data) = &input.data else {
        return Err(syn::Error::new_spanned(
            input,
            "#[derive(Module)] works on structs",
        ));
    };
    let mut visits = Vec::new();
    let mut visits_mut = Vec::new();
    let fields: Vec<(Tokens, String, &syn::Field)> = match &data.fields {
        Fields::Named(f) => f
            .named
            .iter()
            .map(|f| {
                let ident = f.ident.as_ref().expect("named field");
                (quote!(#ident), ident.to_string(), f)
            })
            .collect(),
        Fields::Unnamed(f) => f
            .unnamed
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let index = syn::Index::from(i);
                (quote!(#index), i.to_string(), f)
            })
            .collect(),
        Fields::Unit => Vec::new(),
    };
    for (access, default_name, field) in fields {
        let attrs = field_attrs(field)?;
        if attrs.skip {
            continue;
        }
        let field_name = attrs.rename.unwrap_or(default_name);
        let kind = match attrs.kind.as_deref().unwrap_or(if field_name == "bias" {
            "bias"
        } else {
            "weight"
        }) {
            "bias" => quote!(#nn::ParamKind::Bias),
            "norm" => quote!(#nn::ParamKind::Norm),
            "embedding" => quote!(#nn::ParamKind::Embedding),
            _ => quote!(#nn::ParamKind::Weight),
        };
        visits.push(quote! {
            #nn::ModuleField::visit_field(&self.#access, #field_name, #kind, visitor);
        });
        visits_mut.push(quote! {
            #nn::ModuleField::visit_field_mut(&mut self.#access, #field_name, #kind, visitor);
        });
    }
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    Ok(quote! {
        impl #impl_generics #nn::Module for #name #ty_generics #where_clause {
            fn visit(&self, visitor: &mut dyn #nn::Visitor) {
                #(#visits)*
            }
            fn visit_mut(&mut self, visitor: &mut dyn #nn::VisitorMut) {
                #(#visits_mut)*
            }
        }
    })
}
